"""Checkpoint contract: complete HF directories (AutoModel / AutoModelForMaskedLM / AutoTokenizer load them with
no missing weights), run.json, trainer state without pickle, optimizer state round trip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import trainer
from trainer.checkpoint import load_optimizer_state, load_tensors, optimizer_state, save_tensors
from trainer.config import CONFIG_FORMAT, TrainerConfig
from trainer.optim import build_optimizer

from .conftest import SMALL


@pytest.fixture(scope="module")
def run_dir(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    trainer.run("hybrid", "tiny", corpus_file, out, steps=4, device="cpu",
                overrides=[*SMALL, "train.ckpt_every=2", "train.keep_last=5"])
    return out


def test_run_json_contract(run_dir):
    run = json.loads((run_dir / "run.json").read_text())
    assert run["format"] == "embedgeom-trainer-run" and run["version"] == 1
    assert run["latest"] == "checkpoints/step-0000004" and (run_dir / run["latest"]).is_dir()
    assert run["objective"] == "hybrid" and run["preset"] == "tiny" and run["status"] == "complete"
    assert run["checkpoints"] == ["checkpoints/step-0000002", "checkpoints/step-0000004"]


def test_every_checkpoint_is_a_complete_hf_directory(run_dir):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    latest = run_dir / json.loads((run_dir / "run.json").read_text())["latest"]
    names = {p.name for p in latest.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
            "trainer_config.json", "trainer_state.safetensors", "trainer_state.json"} <= names
    config = json.loads((latest / "config.json").read_text())
    assert config["attn_implementation"] == "sdpa" and config["architectures"] == ["BertForMaskedLM"]

    model, info = AutoModel.from_pretrained(latest, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"] and not info["error_msgs"]
    assert model.config._attn_implementation == "sdpa"
    mlm, info = AutoModelForMaskedLM.from_pretrained(latest, output_loading_info=True)
    assert not info["missing_keys"] and set(info["unexpected_keys"]) <= {"bert.pooler.dense.weight",
                                                                          "bert.pooler.dense.bias"}
    with safe_open(str(latest / "model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    torch.testing.assert_close(mlm.cls.predictions.transform.dense.weight,
                               saved["cls.predictions.transform.dense.weight"])
    torch.testing.assert_close(mlm.cls.predictions.decoder.weight, saved["bert.embeddings.word_embeddings.weight"])
    tok = AutoTokenizer.from_pretrained(latest)
    enc = tok(["the red cat sees the dog .", "a"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape[:2] == enc["input_ids"].shape and torch.isfinite(out).all()
    assert tok.model_max_length == 32 == model.config.max_position_embeddings


def test_trainer_files_are_json_and_safetensors_only(run_dir):
    latest = run_dir / "checkpoints" / "step-0000004"
    cfg = json.loads((latest / "trainer_config.json").read_text())
    assert cfg["format"] == CONFIG_FORMAT and cfg["corpus"].endswith("toy.jsonl")
    from trainer.corpus import open_corpus

    digest = open_corpus(cfg["corpus"]).digest  # the corpus's identity on resume: its content, not its path
    assert cfg["corpus_digest"] == digest == json.loads((run_dir / "run.json").read_text())["corpus_digest"]
    assert TrainerConfig.from_dict(cfg).objective.name == "hybrid"
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["format"] == "embedgeom-trainer-state" and state["step"] == 4
    assert state["data_position"] == 4 * 8 and state["replicas_identical"] is True
    with safe_open(str(latest / "trainer_state.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("teacher.") for k in keys) and any(k.startswith("optim.") for k in keys)
    assert "balance.log_vars" in keys and any(k.startswith("predictor.") for k in keys)
    for p in latest.iterdir():  # torch.save files are zip archives (or pickle streams): none here
        assert not zipfile.is_zipfile(p) and not p.read_bytes().startswith(b"\x80")


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    named = list(lin.named_parameters())
    opt = build_optimizer(named, lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    for _ in range(3):
        opt.zero_grad()
        lin(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, meta = optimizer_state(opt)
    save_tensors(tensors, tmp_path / "state.safetensors")  # through the files, as on disk
    tensors = load_tensors(tmp_path / "state.safetensors")
    meta = json.loads(json.dumps(meta))
    lin2 = torch.nn.Linear(3, 2)
    lin2.load_state_dict(lin.state_dict())
    opt2 = build_optimizer(list(lin2.named_parameters()), lr=0.5, betas=(0.5, 0.5), eps=1e-3, weight_decay=0.0)
    load_optimizer_state(opt2, tensors, meta)
    x = torch.randn(4, 3)
    for o, m in ((opt, lin), (opt2, lin2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    torch.testing.assert_close(lin.weight, lin2.weight, rtol=0, atol=0)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.98)


def test_embedgeom_loads_the_run_and_pools_like_the_trainer(run_dir):
    """embedgeom.load_encoder(run dir) follows run.json to the latest checkpoint, and its mean pooling equals
    the trainer's geometry-snapshot pooling of the same texts packed into one row."""
    import numpy as np
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    import embedgeom as eg
    from trainer.model import Student, bert_config, mean_pool_segments, packed_inputs

    texts = ["the red cat sees the dog .", "a quiet child paints the old window .", "the bird ."]
    enc = eg.load_encoder(run_dir, device="cpu", dtype="float32")
    theirs = eg.encode(enc, texts, poolings=("mean",), layers=(-1,)).get("mean", -1)
    assert theirs.shape == (3, 32)

    latest = run_dir / json.loads((run_dir / "run.json").read_text())["latest"]
    cfg = json.loads((latest / "config.json").read_text())
    student = Student(bert_config(vocab_size=cfg["vocab_size"], hidden_size=32, num_layers=1, num_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, hidden_dropout=0.0,
                                  attention_dropout=0.0, hidden_act="gelu", layer_norm_eps=1e-12,
                                  initializer_range=0.02, pad_token_id=0), objective="mlm").eval()
    student.load_hf_state_dict(load_file(latest / "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(latest)
    ids = [tok(t)["input_ids"] for t in texts]
    row = [i for seq in ids for i in seq]
    segments = np.array([[k + 1 for k, seq in enumerate(ids) for _ in seq]], dtype=np.uint8)
    mask, positions, seg = packed_inputs(segments, "cpu")
    with torch.no_grad():
        h = student.encode(torch.tensor([row]), mask, positions)
    pooled = mean_pool_segments(h, seg).numpy()
    np.testing.assert_allclose(pooled, theirs, rtol=1e-4, atol=1e-5)
