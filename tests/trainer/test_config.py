"""Presets, overrides with type checks, error messages, resume differences, JSON round trip."""

from __future__ import annotations

import pytest

from trainer.config import (
    RUNTIME_FIELDS,
    TrainerConfig,
    apply_overrides,
    config_differences,
    preset_config,
    resolve_config,
    valid_keys,
)
from trainer.errors import TrainerError


def test_presets_match_the_issue():
    tiny = preset_config("tiny", "mlm")
    assert (tiny.model.num_layers, tiny.model.hidden_size, tiny.model.num_heads, tiny.model.intermediate_size) == (
        2, 128, 2, 512)
    assert tiny.data.seq_len == 64 and tiny.data.tokenizer == "wordpiece" and tiny.train.batch_size == 32
    paper = preset_config("paper", "hybrid")
    assert (paper.model.num_layers, paper.model.hidden_size, paper.model.num_heads, paper.model.intermediate_size,
            paper.data.seq_len) == (6, 512, 8, 2048, 128)
    assert paper.objective.name == "hybrid"
    base = preset_config("base", "mlm")
    assert (base.model.num_layers, base.model.hidden_size, base.model.num_heads, base.model.intermediate_size,
            base.data.vocab_size) == (12, 768, 12, 3072, 30522)


def test_paper_preset_has_about_35m_parameters():
    from transformers import BertModel

    from trainer.loop import engine_from_config  # noqa: F401  (the same mapping the trainer uses)
    from trainer.model import bert_config

    c = preset_config("paper", "mlm")
    cfg = bert_config(vocab_size=c.data.vocab_size, hidden_size=c.model.hidden_size, num_layers=c.model.num_layers,
                      num_heads=c.model.num_heads, intermediate_size=c.model.intermediate_size,
                      max_position_embeddings=c.data.seq_len, hidden_dropout=0.1, attention_dropout=0.1,
                      hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02, pad_token_id=0)
    n = sum(p.numel() for p in BertModel(cfg, add_pooling_layer=False).parameters())
    # embeddings 30522*512 + 128*512 + 2*512 + LN, 6 layers of 4*512^2 + 2*512*2048 (+ biases, LNs)
    assert 34e6 < n < 36e6


def test_overrides_are_typed():
    c = apply_overrides(preset_config("tiny"), ["optim.lr=3e-4", "model.hidden_size=256", "train.compile=true",
                                                "objective.balance=sigmoid", "optim.betas=0.9,0.999",
                                                "train.steps=1_000", "data.tokenizer=/x/y"])
    assert c.optim.lr == 3e-4 and c.model.hidden_size == 256 and c.train.compile is True
    assert c.objective.balance == "sigmoid" and c.optim.betas == (0.9, 0.999) and c.train.steps == 1000
    assert c.data.tokenizer == "/x/y"


@pytest.mark.parametrize(("item", "match"), [
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("model.hidden_size=12.5", "model.hidden_size: expected an integer"),
    ("train.compile=maybe", "train.compile: expected a boolean"),
    ("objective.balance=softmax", "objective.balance: expected one of uncertainty|sigmoid"),
    ("optim.betas=0.9", "optim.betas: expected 2 comma-separated numbers"),
    ("optm.lr=1", "unknown key. Did you mean optim.lr"),
    ("nosuch.key=1", "Valid keys: model.hidden_size"),
    ("optim.lr", "expected 'section.field=value'"),
    ("objective.name=hybrid", "--objective"),
])
def test_bad_overrides_explain_themselves(item, match):
    with pytest.raises(TrainerError, match=match.replace("|", "\\|").replace(".", "\\.").replace("(", "\\(")):
        apply_overrides(preset_config("tiny"), [item])


def test_unknown_key_error_lists_every_valid_key():
    with pytest.raises(TrainerError) as err:
        apply_overrides(preset_config("tiny"), ["zzz=1"])
    msg = str(err.value)
    assert all(k in msg for k in valid_keys()) and "\n" not in msg


@pytest.mark.parametrize(("overrides", "match"), [
    (["model.hidden_size=100", "model.num_heads=3"], "model.hidden_size: expected a multiple of model.num_heads"),
    (["mask.rate=1.5"], "mask.rate"),
    (["train.batch_size=10", "train.grad_accum=4"], "train.batch_size"),
    (["ema.start=1.0", "ema.end=0.99"], "ema.start/ema.end"),
    (["objective.target_layers=5"], "objective.target_layers"),
    (["optim.lr=0"], "optim.lr"),
])
def test_validation_names_the_field(overrides, match):
    with pytest.raises(TrainerError, match=match):
        resolve_config("hybrid", "tiny", overrides)


def test_bad_objective_preset_steps():
    with pytest.raises(TrainerError, match="objective: expected one of mlm\\|hybrid"):
        resolve_config("jepa", "tiny")
    with pytest.raises(TrainerError, match="preset: expected one of tiny\\|paper\\|base"):
        resolve_config("mlm", "huge")
    with pytest.raises(TrainerError, match="steps: expected a positive integer"):
        resolve_config("mlm", "tiny", steps=0)


def test_json_round_trip_and_differences():
    c = resolve_config("hybrid", "paper", ["optim.betas=0.9,0.95"], steps=7)
    back = TrainerConfig.from_dict(c.to_dict())
    assert back == c
    other = resolve_config("hybrid", "paper", ["optim.betas=0.9,0.95", "optim.lr=1e-3", "train.log_every=1",
                                               "train.keep_last=1"], steps=8)
    diffs = config_differences(c, other)
    assert diffs == ["optim.lr: 0.0005 -> 0.001", "train.steps: 7 -> 8"]
    assert "train.log_every" in RUNTIME_FIELDS
