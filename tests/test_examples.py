"""Every example script runs (small settings) and prints what it promises."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_example_is_tested():
    tested = {"metrics_on_your_embeddings", "analyze_checkpoint", "compare_poolings", "layer_profile",
              "train_tiny_and_compare"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_metrics_on_your_embeddings(capsys):
    out = load("metrics_on_your_embeddings").main(["--n", "400", "--d", "32"])
    assert out["streamed"] == pytest.approx(out["batch"], rel=1e-9)
    assert out["diff"] < 0  # b - a: the squashed model B has the lower effective rank
    assert "95% CI" in capsys.readouterr().out


def test_analyze_checkpoint(tmp_path, capsys):
    res = load("analyze_checkpoint").main(["--max-texts", "60", "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "result.json").is_file() and res.measured()
    assert "uniformity" in capsys.readouterr().out


def test_compare_poolings(capsys):
    out = load("compare_poolings").main(["--max-texts", "80"])
    assert set(out) == {"mean", "cls", "max", "attention"}
    assert "uniformity(max) - uniformity(mean)" in capsys.readouterr().out


def test_layer_profile(tmp_path):
    path = load("layer_profile").main(["--max-texts", "60", "--out", str(tmp_path / "p.png")])
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


def test_train_tiny_and_compare(tmp_path, capsys):
    small = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
             "data.vocab_size=400", "train.batch_size=8", "predictor.hidden_size=32", "predictor.heads=2"]
    args = ["--steps", "6", "--out", str(tmp_path / "runs"), "--corpus", "sample:polarity", "--max-texts", "60"]
    for o in small:
        args += ["--set", o]
    cmp = load("train_tiny_and_compare").main(args)
    assert cmp.differences and cmp.similarity
    assert "effective_rank" in capsys.readouterr().out
