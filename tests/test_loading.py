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
    with pytest.raises(CheckpointError, match=r"no tokenizer in .*no-tokenizer.*Fix: "):
        eg.load_encoder(notok)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "embedgeom-trainer-run", "version": 1}))
    with pytest.raises(CheckpointError, match="no finished checkpoint"):
        eg.load_encoder(run)


def test_a_text_model_without_layers_is_refused(tmp_path):
    from embedgeom.loading import model_family

    class NoLayers:
        model_type = "odd"
        vocab_size = 10

    with pytest.raises(CheckpointError, match=r"^checkpoint: where \(odd\) is not a text model \(no vocabulary or "
                                              r"layers\)\.$"):
        model_family(NoLayers(), "where")


def test_model_families_from_configs():
    from transformers import BartConfig, BertConfig, GPT2Config, LlamaConfig, T5Config

    from embedgeom.loading import model_family

    assert model_family(BertConfig(), "x") == "encoder-only"
    assert model_family(GPT2Config(), "x") == "decoder-only"
    assert model_family(LlamaConfig(), "x") == "decoder-only"
    assert model_family(T5Config(), "x") == "encoder-decoder"
    assert model_family(BartConfig(), "x") == "encoder-decoder"


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


def test_sentence_transformers_dense_module(tiny_bert_dir, tmp_path):
    """A Pooling + Dense + Normalize stack is read into the native pooling (its files checked, not refused)."""
    import torch
    from safetensors.torch import save_file

    d = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, d)
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (d / "2_Dense").mkdir()
    (d / "2_Dense" / "config.json").write_text(json.dumps({"activation_function": "torch.nn.modules.activation.Tanh"}))
    save_file({"linear.weight": torch.randn(8, 32), "linear.bias": torch.zeros(8)}, d / "2_Dense" / "model.safetensors")
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    enc = eg.load_encoder(d, device="cpu", dtype="float32")
    assert enc.kind == "sentence-transformers"
    assert enc.native.describe() == "cls -> dense(32->8, Tanh) -> L2-normalize"


def test_trainer_run_json_with_a_bad_latest_names_the_file(tiny_bert_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_bert_dir, run / "checkpoints" / "step-0000010")
    (run / "run.json").write_text(json.dumps({"format": "embedgeom-trainer-run", "version": 1, "latest": 10}))
    with pytest.raises(CheckpointError, match=r"run\.json names its latest checkpoint as 10.*Fix: "):
        eg.load_encoder(run)
    (run / "run.json").write_text(json.dumps({"format": "embedgeom-trainer-run", "version": 1,
                                              "latest": "checkpoints/step-0000020"}))
    with pytest.raises(CheckpointError, match=r"step-0000020, which has no config\.json.*Fix: "):
        eg.load_encoder(run)
