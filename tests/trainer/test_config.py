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

    from trainer.model import bert_config_for  # the model section -> BertConfig mapping the engine uses

    c = preset_config("paper", "mlm")
    cfg = bert_config_for(c.model, seq_len=c.data.seq_len, vocab_size=c.data.vocab_size, pad_token_id=0)
    n = sum(p.numel() for p in BertModel(cfg, add_pooling_layer=False).parameters())
    # embeddings 30522*512 + 128*512 + 2*512 + LN, 6 layers of 4*512^2 + 2*512*2048 (+ biases, LNs)
    assert 34e6 < n < 36e6


#: Every config field the engine reads, with a value that differs from the tiny hybrid preset's (and is valid).
ENGINE_OVERRIDES: dict[str, str] = {
    "model.hidden_size": "48", "model.num_layers": "3", "model.num_heads": "3", "model.intermediate_size": "80",
    "model.hidden_dropout": "0.05", "model.attention_dropout": "0.07", "model.hidden_act": "relu",
    "model.layer_norm_eps": "1e-6", "model.initializer_range": "0.03", "model.max_position_embeddings": "40",
    "data.seq_len": "24",
    "mask.rate": "0.2", "mask.mask_prob": "0.7", "mask.random_prob": "0.2", "mask.span_length": "2",
    "objective.balance": "sigmoid", "objective.balance_init": "0.5", "objective.balance_lr_scale": "3",
    "objective.loss": "smooth_l1", "objective.smooth_l1_beta": "0.5", "objective.target_layers": "2",
    "predictor.layers": "2", "predictor.hidden_size": "24", "predictor.heads": "3", "predictor.mlp_ratio": "3",
    "ema.start": "0.99", "ema.end": "0.999", "ema.schedule": "cosine",
    "optim.lr": "2e-3", "optim.betas": "0.8,0.9", "optim.eps": "1e-7", "optim.weight_decay": "0.02",
    "optim.warmup_steps": "3", "optim.schedule": "linear", "optim.min_lr_ratio": "0.1",
    "optim.clip_grad_norm": "0.5",
    "train.steps": "7", "train.batch_size": "12", "train.grad_accum": "3", "train.seed": "5",
    "train.precision": "bf16", "train.compile": "true", "train.compile_mode": "reduce-overhead",
}
#: Fields the engine does not read (the data pipeline, the loop's cadence and evaluation, the cache).
NOT_ENGINE = {
    "data.tokenizer", "data.vocab_size", "data.lowercase", "data.holdout", "data.min_piece", "data.max_documents",
    "data.tokenizer_documents", "data.text_field", "data.cache_dir",
    "train.log_every", "train.eval_every", "train.eval_batches", "train.geometry_every", "train.geometry_texts",
    "train.ckpt_every", "train.keep_last", "train.stop_after",
    "watch.enabled", "watch.rank_fraction", "watch.rank_floor", "watch.rankme_floor", "watch.var_ratio",
    "watch.target_var_floor", "watch.grace_steps", "watch.batches",
}


def test_every_config_field_is_classified_and_the_engine_overrides_differ_from_the_preset():
    """A new config field fails here until it is added to ENGINE_OVERRIDES (and checked below) or NOT_ENGINE."""
    assert set(ENGINE_OVERRIDES) | NOT_ENGINE == set(valid_keys()) and not set(ENGINE_OVERRIDES) & NOT_ENGINE
    base = preset_config("tiny", "hybrid").to_dict()
    changed = resolve_config("hybrid", "tiny", [f"{k}={v}" for k, v in ENGINE_OVERRIDES.items()]).to_dict()
    for key in ENGINE_OVERRIDES:
        section, name = key.split(".")
        assert changed[section][name] != base[section][name], key


def test_engine_from_config_carries_every_field_it_uses(monkeypatch):
    """The one config -> engine mapping (``engine_from_config``, what ``trainer.run`` builds): every field the
    engine reads reaches the component that uses it."""
    import numpy as np
    import torch

    import trainer.engine as engine_mod
    from trainer.distributed import DistInfo
    from trainer.ema import ema_momentum
    from trainer.masking import mask_budget
    from trainer.model import Student
    from trainer.optim import lr_factor
    from trainer.tokenizer import SpecialIds

    c = resolve_config("hybrid", "tiny", [f"{k}={v}" for k, v in ENGINE_OVERRIDES.items()])
    special = SpecialIds(pad=0, cls=2, sep=3, mask=4, all=(0, 1, 2, 3, 4), vocab_size=60)
    calls: dict[str, list] = {}

    def spy(name, real):
        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            calls.setdefault(name, []).append((args, kwargs, out))
            return out
        return wrapper

    for name in ("mask_tokens", "lr_factor", "ema_momentum", "teacher_targets"):
        monkeypatch.setattr(engine_mod, name, spy(name, getattr(engine_mod, name)))
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy("clip", torch.nn.utils.clip_grad_norm_))
    # train.compile: record the calls instead of compiling (the step below then runs eagerly)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.setdefault("compile", []).append(
        (type(self).__name__, kw)))
    autocast: list[bool] = []
    real_encode = Student.encode
    monkeypatch.setattr(Student, "encode", lambda self, *a: autocast.append(torch.is_autocast_enabled("cpu")) or
                        real_encode(self, *a))

    engine = engine_mod.engine_from_config(c, special, device=torch.device("cpu"), dist=DistInfo())

    # model (+ data.seq_len, the tokenizer's vocabulary and padding id) -> the encoder's BertConfig
    hf = engine.student.mlm.config
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size) == (48, 3, 3, 80)
    assert (hf.hidden_dropout_prob, hf.attention_probs_dropout_prob, hf.hidden_act) == (0.05, 0.07, "relu")
    assert (hf.layer_norm_eps, hf.initializer_range, hf.max_position_embeddings) == (1e-6, 0.03, 40)
    assert (hf.vocab_size, hf.pad_token_id) == (60, 0) and engine.seq_len == 24
    # objective and predictor -> the student's heads, loss and balance
    s = engine.student
    assert s.objective == "hybrid" and engine.teacher is not None
    assert (s.jepa_kind, s.smooth_l1_beta) == ("smooth_l1", 0.5)
    assert s.balance.mode == "sigmoid" and s.balance.logit.item() == 0.5
    assert s.predictor.inp.out_features == 24 and len(s.predictor.blocks) == 2
    assert s.predictor.blocks[0].heads == 3 and s.predictor.blocks[0].fc1.out_features == 3 * 24
    # optim (+ objective.balance_lr_scale) -> AdamW
    groups = {g["group"]: g for g in engine.optimizer.param_groups}
    assert groups["decay"]["weight_decay"] == 0.02 and groups["balance"]["lr_scale"] == 3.0
    assert all(g["betas"] == (0.8, 0.9) and g["eps"] == 1e-7 for g in groups.values())
    # train -> batch split, steps, seed, precision, compile
    assert (engine.global_batch, engine.grad_accum, engine.micro_batch, engine.total_steps) == (12, 3, 4, 7)
    assert engine.seed == 5 and engine.precision == "bf16"
    assert calls["compile"] == [("Student", {"mode": "reduce-overhead"}), ("BertModel", {"mode": "reduce-overhead"})]
    other_seed = engine_mod.engine_from_config(
        resolve_config("hybrid", "tiny", [f"{k}={v}" for k, v in ENGINE_OVERRIDES.items() if k != "train.seed"]),
        special, device=torch.device("cpu"), dist=DistInfo())
    assert not torch.equal(other_seed.student.mlm.bert.embeddings.word_embeddings.weight,
                           s.mlm.bert.embeddings.word_embeddings.weight)  # train.seed seeds the initialisation

    rng = np.random.default_rng(0)
    micro = []
    for _ in range(3):
        tokens = rng.integers(5, 60, (4, 24))
        tokens[:, 0], tokens[:, -1] = 2, 3
        micro.append((tokens, np.ones((4, 24), dtype=np.uint8)))
    calls.clear()
    autocast.clear()
    engine.train_step(0, micro)

    # mask -> the corruption of every micro-batch
    assert len(calls["mask_tokens"]) == 3
    for _, kw, masked in calls["mask_tokens"]:
        assert {k: kw[k] for k in ("rate", "mask_prob", "random_prob", "span_length", "mask_id")} == {
            "rate": 0.2, "mask_prob": 0.7, "random_prob": 0.2, "span_length": 2, "mask_id": 4}
        assert masked.slots.shape == (4, mask_budget(24, 0.2, 2))
    # objective.target_layers -> the teacher's targets
    assert [a[-1] for a, _, _ in calls["teacher_targets"]] == [2, 2, 2]
    # optim schedule and clipping; ema schedule
    ((lr_args, lr_kw, factor),) = calls["lr_factor"]
    assert lr_args == (0,) and lr_kw == {"total_steps": 7, "warmup_steps": 3, "schedule": "linear", "min_ratio": 0.1}
    assert engine.last_lr == pytest.approx(2e-3 * factor) and factor == lr_factor(
        0, total_steps=7, warmup_steps=3, schedule="linear", min_ratio=0.1)
    assert calls["clip"][0][0][1] == 0.5
    ((ema_args, ema_kw, momentum),) = calls["ema_momentum"]
    assert ema_args == (0, 7) and ema_kw == {"start": 0.99, "end": 0.999, "schedule": "cosine"}
    assert engine.last_momentum == momentum == ema_momentum(0, 7, start=0.99, end=0.999, schedule="cosine")
    # train.precision=bf16 -> the student's forwards run under autocast
    assert autocast and all(autocast)
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


@pytest.mark.parametrize(("objective", "preset", "overrides"), [
    ("mlm", "tiny", []),
    ("hybrid", "paper", ["optim.warmup_steps=50", "train.batch_size=32", "train.steps=500"]),
    ("hybrid", "tiny", ["optim.betas=0.8,0.95", "optim.lr=0.0003", "ema.schedule=cosine", "train.compile=true",
                        "data.tokenizer=some/tokenizer", "train.stop_after=7", "watch.var_ratio=0.2"]),
])
def test_overrides_for_rebuilds_the_config_from_its_preset(objective, preset, overrides):
    from trainer import overrides_for

    config = resolve_config(objective, preset, overrides)
    rebuilt = overrides_for(config)
    assert sorted(rebuilt) == sorted(overrides)  # exactly the fields that differ from the preset, as given
    assert resolve_config(objective, preset, rebuilt) == config
