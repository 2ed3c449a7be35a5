"""Incomplete or inconsistent checkpoints are refused in one line that names the file (or tensor) and the fix.

Each case copies the tiny test model, damages the copy in one way and checks the refusal through the Python API
(:func:`embedgeom.load_encoder`) and through ``embedgeom analyze``: a :class:`CheckpointError`, one line, the
file or tensor named, a ``Fix:``; on the CLI a non-zero exit, one line, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom.cli import app
from embedgeom.loading import CheckpointError

runner = CliRunner()


def _copy(tiny_bert_dir: Path, tmp_path: Path, name: str = "model") -> Path:
    d = tmp_path / name
    shutil.copytree(tiny_bert_dir, d)
    return d


def _edit_weights(d: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    w = load_file(d / "model.safetensors")
    save_file(edit(w), d / "model.safetensors", {"format": "pt"})


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _sentence_transformers(d: Path, dense: bool = False) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                             "pooling_mode_mean_tokens": True}))
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (d / "2_Dense").mkdir()
        dense_cfg = {"in_features": 32, "out_features": 8, "bias": True,
                     "activation_function": "torch.nn.modules.activation.Tanh"}
        (d / "2_Dense" / "config.json").write_text(json.dumps(dense_cfg))
        save_file({"linear.weight": torch.randn(8, 32), "linear.bias": torch.zeros(8)},
                  d / "2_Dense" / "model.safetensors")
    (d / "modules.json").write_text(json.dumps(modules))


class _Refused:
    """Unpickling this would call os.getcwd (harmless, but not a tensor: weights_only refuses it)."""

    def __reduce__(self):
        return (os.getcwd, ())


# --- the damaged checkpoints: each returns (the spec to load, substrings the message must contain) ---------------

def missing_layer(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    _edit_weights(d, lambda w: {k: v for k, v in w.items() if ".layer.1." not in k})
    return str(d), ["model.safetensors", "encoder.layer.1.*", "initialised at random"]


def no_vocabulary(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    (d / "tokenizer.json").unlink()  # tokenizer_config.json stays: transformers would build a 5-token tokenizer
    return str(d), ["no tokenizer in", "tokenizer_config.json"]


def degenerate_vocabulary(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    _edit_json(d / "tokenizer.json", lambda t: t["model"].update(vocab={s: i for i, s in enumerate(specials)}))
    return str(d), [str(d), "no vocabulary beyond its 5 special tokens"]


def malformed_tokenizer_file(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    return str(d), ["tokenizer.json", "could not be loaded"]


def malformed_config_json(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    (d / "config.json").write_text('{"model_type": "bert", "hidden_size": 32,')
    return str(d), ["config.json", "not valid JSON"]


def truncated_safetensors(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return str(d), ["model.safetensors", "truncated"]


def unreadable_safetensors_header(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    (d / "model.safetensors").write_bytes(b"\x00" * 100)
    return str(d), ["model.safetensors", "header is unreadable"]


def missing_shard(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    w = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names = sorted(w)
    half = len(names) // 2
    save_file({k: w[k] for k in names[:half]}, d / "model-00001-of-00002.safetensors", {"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: ("model-00001-of-00002.safetensors" if i < half else
                                                "model-00002-of-00002.safetensors") for i, k in enumerate(names)}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return str(d), ["model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing"]


def no_weights(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    (d / "model.safetensors").unlink()
    return str(d), ["no weights in", "model.safetensors"]


def malformed_modules_json(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    _sentence_transformers(d)
    (d / "modules.json").write_text('[{"idx": 0, "path": ""')
    return str(d), ["modules.json", "not valid JSON"]


def malformed_pooling_config(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    _sentence_transformers(d)
    (d / "1_Pooling" / "config.json").write_text("{pooling_mode_mean_tokens: true")
    return str(d), [str(Path("1_Pooling") / "config.json"), "not valid JSON"]


def malformed_sentence_bert_config(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    _sentence_transformers(d)
    (d / "sentence_bert_config.json").write_text("max_seq_length: 128")
    return str(d), ["sentence_bert_config.json", "not valid JSON"]


def damaged_dense_weights(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    _sentence_transformers(d, dense=True)
    data = (d / "2_Dense" / "model.safetensors").read_bytes()
    (d / "2_Dense" / "model.safetensors").write_bytes(data[:-40])
    return str(d), [str(Path("2_Dense") / "model.safetensors"), "truncated"]


def malformed_run_json(src: Path, tmp: Path) -> tuple[str, list[str]]:
    run = tmp / "run"
    shutil.copytree(src, run / "checkpoints" / "step-0000010")
    (run / "run.json").write_text('{"format": "embedgeom-trainer-run", "latest": ')
    return str(run), ["run.json", "not valid JSON", "checkpoints/step-*"]


def tokenizer_larger_than_embeddings(src: Path, tmp: Path) -> tuple[str, list[str]]:
    from transformers import AutoTokenizer

    d = _copy(src, tmp)
    tok = AutoTokenizer.from_pretrained(d)
    rows = len(tok.get_vocab())
    tok.add_tokens(["zzzextraone", "zzzextratwo"])
    tok.save_pretrained(d)
    return str(d), ["tokenizer.json", f"{rows + 2} token ids", f"{rows} rows", "model.safetensors"]


def config_vocab_disagrees(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    rows = json.loads((d / "config.json").read_text())["vocab_size"]
    _edit_json(d / "config.json", lambda c: c.update(vocab_size=rows + 10))
    return str(d), ["config.json", "model.safetensors", "embeddings.word_embeddings.weight",
                    f"vocab_size={rows + 10}", f"{rows} rows"]


def config_layers_disagree(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    _edit_json(d / "config.json", lambda c: c.update(num_hidden_layers=1))
    return str(d), ["config.json", "model.safetensors", "encoder.layer.1.*", "num_hidden_layers=1"]


def non_finite_weights(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)

    def poison(w):
        w["encoder.layer.0.attention.self.query.weight"][0, :3] = float("nan")
        w["embeddings.LayerNorm.weight"][0] = float("inf")
        return w

    _edit_weights(d, poison)
    return str(d), ["model.safetensors", "non-finite", "tensor embeddings.LayerNorm.weight: 1 of 32 elements",
                    "1 more tensors"]


def refused_pickle(src: Path, tmp: Path) -> tuple[str, list[str]]:
    d = _copy(src, tmp)
    w: dict = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    w["extra"] = _Refused()
    torch.save(w, d / "pytorch_model.bin")
    return str(d), ["pytorch_model.bin", "cannot be loaded safely", "convert it to safetensors"]


def symlink_loop(src: Path, tmp: Path) -> tuple[str, list[str]]:
    link = tmp / "loop"
    link.symlink_to(link)
    return "loop", ["loop", "symbolic-link loop"]  # relative: it used to be taken for a hub id


CASES = [missing_layer, no_vocabulary, degenerate_vocabulary, malformed_tokenizer_file, malformed_config_json,
         truncated_safetensors, unreadable_safetensors_header,
         missing_shard, no_weights, malformed_modules_json, malformed_pooling_config, malformed_sentence_bert_config,
         damaged_dense_weights, malformed_run_json, tokenizer_larger_than_embeddings, config_vocab_disagrees,
         config_layers_disagree, non_finite_weights, refused_pickle, symlink_loop]


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_load_encoder_refuses(damage, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, expected = damage(tiny_bert_dir, tmp_path)
    with pytest.raises(CheckpointError) as err:
        eg.load_encoder(spec, device="cpu", dtype="float32")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "\n" not in msg and msg.startswith("checkpoint: ") and "Fix: " in msg, msg
    for part in expected:
        assert part in msg, (part, msg)
    assert "weights_only=False" not in msg and "hub" not in msg, msg


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_cli_analyze_refuses_in_one_line(damage, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, expected = damage(tiny_bert_dir, tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat on the mat\na dog ran fast\nthe red car\nhello world\n")
    # -q: errors only (without it, the finished data-loading stage prints its own line first)
    res = runner.invoke(app, ["analyze", spec, "--data", str(texts), "--no-cache", "--device", "cpu", "-q"])
    out = res.output.strip()
    assert res.exit_code != 0, out
    assert len(out.splitlines()) == 1, out
    assert "Traceback" not in out and "Fix: " in out, out
    assert expected[0] in out, out


def test_refused_pickle_never_suggests_unsafe_loading(tiny_bert_dir, tmp_path):
    spec, _ = refused_pickle(tiny_bert_dir, tmp_path)
    with pytest.raises(CheckpointError) as err:
        eg.load_encoder(spec)
    msg = str(err.value)
    assert "weights_only" not in msg and "trust the source" not in msg and "\x1b" not in msg


def test_masked_lm_checkpoint_without_pooler_loads_deterministically(tiny_bert_dir, tmp_path):
    """A BertForMaskedLM checkpoint (the MLM head, no pooler) loads as a BertModel: the head is ignored, the absent
    pooler is zero-filled (nothing random) and recorded in the card; every encoder weight comes from the file."""
    from transformers import AutoConfig, BertForMaskedLM

    d = _copy(tiny_bert_dir, tmp_path)
    cfg = AutoConfig.from_pretrained(d)
    cfg.architectures = ["BertForMaskedLM"]
    BertForMaskedLM(cfg).save_pretrained(d)
    stored = load_file(d / "model.safetensors")
    assert not any(k.startswith("bert.pooler.") for k in stored) and any(k.startswith("cls.") for k in stored)
    a = eg.load_encoder(d, device="cpu", dtype="float32")
    b = eg.load_encoder(d, device="cpu", dtype="float32")
    assert a.card()["absent_weights"] == ["pooler"]
    for name, p in a.model.named_parameters():
        if name.startswith("pooler."):
            assert not p.any()
        else:
            torch.testing.assert_close(p, stored[f"bert.{name}"], rtol=0, atol=0)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_complete_checkpoints_record_no_absent_weights(tiny_encoder, minilm):
    assert "absent_weights" not in tiny_encoder.card() and "absent_weights" not in minilm.card()


def test_dangling_symlink_is_named(tmp_path):
    link = tmp_path / "model"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(CheckpointError, match=r"symbolic link to .*gone, which does not exist"):
        eg.load_encoder(link)
