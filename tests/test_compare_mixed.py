"""Comparisons of models whose pooling sets differ (an encoder's mean against a decoder-only model's last), and of
single-text regression probes: what each side used is said, and the numbers are each side's own."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom.cli import app
from embedgeom.vectors import analyze_embeddings
from tests.fixtures import subset


def test_two_models_with_no_common_pooling_are_refused_naming_each_side(analysed):
    a, b = analysed
    only_mean, only_max = subset(a, poolings=["mean"]), subset(b, poolings=["max"])
    with pytest.raises(ValueError, match=r"shares no pooling with a \(a measured mean; b measured max\)\. Pair one "
                                         r"of each with poolings=\('mean', 'max'\)") as err:
        eg.compare(only_mean, only_max)
    assert "\n" not in str(err.value)


def test_one_pooling_of_each_model_pairs_a_with_b(analysed):
    a, b = analysed
    only_mean, only_max = subset(a, poolings=["mean"]), subset(b, poolings=["max"])
    cmp = eg.compare(only_mean, only_max, poolings=("mean", "max"))
    assert (cmp.a, cmp.b) == (f"{a.name}:mean", f"{b.name}:max")
    rows = [r for r in cmp.differences if r["kind"] == "metric" and r["name"] == "effective_rank"]
    assert rows
    for r in rows:
        assert (r["pooling"], r["pooling_b"]) == ("mean", "max")
        va = a.value(r["task"], "mean", r["layer"], "effective_rank")["value"]
        vb = b.value(r["task"], "max", r["layer_b"], "effective_rank")["value"]
        assert r["value_a"] == pytest.approx(va, rel=1e-12) and r["value_b"] == pytest.approx(vb, rel=1e-12)
        assert r["diff"] == pytest.approx(vb - va, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match=r"poolings: 'cls' was not measured in b"):
        eg.compare(only_mean, only_max, poolings=("mean", "cls"))


def test_cli_pairs_a_pooling_of_each_of_two_saved_models(analysed, tmp_path):
    a, b = analysed
    subset(a, poolings=["mean"]).save(tmp_path / "a")
    subset(b, poolings=["max"]).save(tmp_path / "b")
    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--poolings", "mean,max",
                                   "--format", "json", "-q"])
    assert out.exit_code == 0, out.output
    assert '"pooling_b": "max"' in out.stdout and f"{a.name}:mean" in out.stdout


def test_single_text_regression_probes_are_compared(tmp_path, rng):
    x = rng.standard_normal((300, 12)).astype(np.float32)
    score = x[:, 0].astype(np.float64) + 0.1 * rng.standard_normal(300)
    noisy = x.copy()
    noisy[:, 0] += rng.standard_normal(300).astype(np.float32) * 2.0  # b carries the score less clearly
    for side, v in (("a", x), ("b", noisy)):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "items.npy", v)
    ra = analyze_embeddings(tmp_path / "a" / "items.npy", labels=score, name="A")
    rb = analyze_embeddings(tmp_path / "b" / "items.npy", labels=score, name="B")
    cmp = eg.compare(ra, rb)
    spearman = [r for r in cmp.differences if r["kind"] == "probe" and r["name"].endswith(":spearman")]
    assert len(spearman) == 1
    row = spearman[0]
    assert row["diff"] < 0 and row["high"] < 0  # b's probe is worse, and the paired interval says so
    assert eg.comparison.better_side(row) == "a"
