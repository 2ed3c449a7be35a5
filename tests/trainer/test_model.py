"""The encoder path against independent references: packed segments = the same texts encoded alone by plain
Hugging Face code; our masked-only MLM loss = BertForMaskedLM's own loss; teacher targets; pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.balance import Balance
from trainer.masking import IGNORE_INDEX, MaskedBatch
from trainer.model import (
    Predictor,
    Student,
    bert_config,
    make_teacher,
    mean_pool_segments,
    packed_inputs,
    teacher_targets,
)

CLS, SEP, PAD = 2, 3, 0


def _config(**kw):
    args = {"vocab_size": 50, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
            "max_position_embeddings": 16, "hidden_dropout": 0.0, "attention_dropout": 0.0, "hidden_act": "gelu",
            "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": PAD}
    args.update(kw)
    return bert_config(**args)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    s = Student(_config(), objective="hybrid", predictor=Predictor(32, width=16, layers=1, heads=2),
                balance=Balance("uncertainty"))
    return s.eval()


def test_config_requests_sdpa(student):
    assert student.mlm.config._attn_implementation == "sdpa"


def test_packed_segments_encode_exactly_like_the_texts_alone(student):
    a, b = [CLS, 11, 12, 13, SEP], [CLS, 21, 22, SEP]
    tokens = np.array([a + b + [PAD] * 3, b + [PAD] * 8])
    segments = np.array([[1] * 5 + [2] * 4 + [0] * 3, [1] * 4 + [0] * 8], dtype=np.uint8)
    mask, positions, _ = packed_inputs(segments, "cpu")
    assert mask.shape == (2, 1, 12, 12) and positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    with torch.no_grad():
        packed = student.encode(torch.tensor(tokens), mask, positions)
        alone_a = student.mlm.bert(input_ids=torch.tensor([a])).last_hidden_state[0]
        alone_b = student.mlm.bert(input_ids=torch.tensor([b])).last_hidden_state[0]
        # the usual padded-batch path of Hugging Face, with a 2-D attention mask
        padded = student.mlm.bert(input_ids=torch.tensor([[*b, PAD], a]),
                                  attention_mask=torch.tensor([[1] * 4 + [0], [1] * 5])).last_hidden_state
    torch.testing.assert_close(packed[0, :5], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[0, 5:9], alone_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1, :4], alone_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[0, :4], alone_b, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(packed).all()  # padding rows attend to padding only: no NaN


def test_single_segment_rows_skip_the_mask():
    mask, positions, seg = packed_inputs(np.ones((2, 8), dtype=np.uint8), "cpu")
    assert mask is None and positions is None and seg.shape == (2, 8)


def test_masked_only_mlm_loss_equals_bert_for_masked_lm_loss(student):
    torch.manual_seed(1)
    ids = torch.randint(5, 50, (3, 10))
    slots = torch.tensor([[1, 4, 0], [2, 3, 7], [5, 0, 0]])
    valid = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    targets_ids = torch.randint(5, 50, (3, 10))
    labels = torch.gather(targets_ids, 1, slots).masked_fill(~valid, IGNORE_INDEX)
    full_labels = torch.full((3, 10), IGNORE_INDEX)
    for r in range(3):
        for k in range(3):
            if valid[r, k]:
                full_labels[r, slots[r, k]] = targets_ids[r, slots[r, k]]
    s = Student(_config(), objective="mlm").eval()
    with torch.no_grad():
        masked = MaskedBatch(input_ids=ids, selected=torch.zeros(3, 10, dtype=torch.bool), slots=slots, valid=valid,
                             labels=labels)
        ours, stats = s(masked, None, None)
        reference = s.mlm(input_ids=ids, labels=full_labels).loss
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert stats.masked.item() == 6  # masked slots counted


def test_teacher_targets_are_layer_normed_top_layers(student):
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    ids = torch.randint(5, 50, (2, 8))
    slots = torch.tensor([[1, 2], [3, 6]])
    out = teacher(input_ids=ids, output_hidden_states=True)
    for k in (1, 2):
        got = teacher_targets(teacher, ids, None, None, slots, k)
        hs = out.hidden_states[-k:]
        expect = sum(F.layer_norm(torch.gather(h, 1, slots[..., None].expand(-1, -1, 32)).reshape(-1, 32), (32,),
                                  eps=1e-5) for h in hs) / k
        torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)


def test_hybrid_forward_one_student_pass_feeds_both_heads(student):
    calls = []
    hook = student.mlm.bert.register_forward_hook(lambda *a: calls.append(1))
    ids = torch.randint(5, 50, (2, 8))
    slots = torch.tensor([[1, 2], [3, 6]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    labels = torch.gather(ids, 1, slots)
    targets = torch.randn(4, 32)
    selected = torch.zeros(2, 8, dtype=torch.bool).scatter(1, slots, True)
    try:
        masked = MaskedBatch(input_ids=ids, selected=selected, slots=slots, valid=valid, labels=labels)
        total, stats = student(masked, None, None, targets)
    finally:
        hook.remove()
    assert len(calls) == 1
    l_mlm, l_jepa, w_mlm, w_jepa = (stats.loss_mlm.item(), stats.loss_jepa.item(), stats.w_mlm.item(),
                                    stats.w_jepa.item())
    assert total.item() == pytest.approx(l_mlm + l_jepa, rel=1e-5)  # uncertainty at s = 0: plain sum
    assert (w_mlm, w_jepa) == (1.0, 1.0)


def test_mean_pool_segments_by_hand():
    h = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    seg = torch.tensor([[1, 1, 2, 0, 0], [1, 1, 1, 1, 1]])
    pooled = mean_pool_segments(h, seg)
    expect = torch.stack([h[0, :2].mean(0), h[0, 2], h[1].mean(0)])
    torch.testing.assert_close(pooled, expect)


def test_hf_state_dict_has_every_bert_key_and_no_tied_copies(student):
    sd = student.hf_state_dict()
    assert "bert.pooler.dense.weight" in sd and "cls.predictions.bias" in sd
    assert "cls.predictions.decoder.weight" not in sd
    fresh = Student(_config(), objective="mlm")
    fresh.load_hf_state_dict(sd)
    torch.testing.assert_close(fresh.mlm.cls.predictions.decoder.weight,
                               student.mlm.bert.embeddings.word_embeddings.weight)
