"""load_encoder: every accepted checkpoint kind, and a clear error for each bad one."""

from __future__ import annotations

import json
import shutil

import pytest

import embedgeom as eg
from embedgeom.loading import CheckpointError


def test_hf_directory(tiny_bert_dir):
    enc = eg.load_encoder(tiny_bert_dir, device="cpu", dtype="float32")
    assert enc.kind == "hf" and enc.native is None and enc.num_layers == 2
    card = enc.card()
    assert card["model_class"] == "BertModel" and card["num_parameters"] > 0
    assert len(card["content_hash"]) == 64 and card["compute_dtype"] == "float32"


def test_sentence_transformers_directory(minilm):
    assert minilm.kind == "sentence-transformers"
    assert minilm.native.modes == ("mean",) and minilm.native.normalize
    assert minilm.max_length == 256  # sentence_bert_config.json's max_seq_length


def test_trainer_run_directory_resolves_latest(tiny_bert_dir, tmp_path):
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-0000010"
    shutil.copytree(tiny_bert_dir, ckpt)
    (ckpt / "trainer_config.json").write_text(json.dumps({"format": "embedgeom-trainer-checkpoint"}))
    (run / "run.json").write_text(json.dumps({"format": "embedgeom-trainer-run", "version": 1,
                                              "latest": "checkpoints/step-0000010"}))
    enc = eg.load_encoder(run, device="cpu")
    assert enc.kind == "trainer" and enc.path == ckpt.resolve()
    assert enc.content_hash == eg.load_encoder(tiny_bert_dir, device="cpu").content_hash


def test_content_hash_changes_with_weights(tiny_bert_dir, tmp_path):
    from tests.fixtures import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other", seed=1)
    assert eg.load_encoder(other).content_hash != eg.load_encoder(tiny_bert_dir).content_hash


def test_missing_and_malformed(tmp_path, tiny_bert_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        eg.load_encoder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        eg.load_encoder(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="got the file"):
        eg.load_encoder(tiny_bert_dir / "config.json")
    notok = tmp_path / "no-tokenizer"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_dir / f, notok / f)
    with pytest.raises(CheckpointError, match=r"no tokenizer in .*no-tokenizer"):
        eg.load_encoder(notok)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "embedgeom-trainer-run", "version": 1}))
    with pytest.raises(CheckpointError, match="no finished checkpoint"):
        eg.load_encoder(run)


def test_decoder_only_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(d)
    with pytest.raises(CheckpointError, match="decoder-only"):
        eg.load_encoder(d)


def test_offline_hub_id_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from embedgeom import hub

    hub.hub_reachable.cache_clear()
    with pytest.raises(CheckpointError, match="'someone/no-such-model'"):
        eg.load_encoder("someone/no-such-model")
    hub.hub_reachable.cache_clear()


def test_bad_device_and_dtype(tiny_bert_dir):
    with pytest.raises(ValueError, match="dtype"):
        eg.load_encoder(tiny_bert_dir, dtype="float8")
    with pytest.raises(ValueError, match="device"):
        eg.load_encoder(tiny_bert_dir, device="tpu")
