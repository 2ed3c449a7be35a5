"""Tables that put models side by side: the combined table of three or more models (metrics and task probes with
intervals, n and d, in the table, JSON and CSV), and the warning when the results differ in n or d."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.cli import app
from embedgeom.comparison import IncomparableWarning, models_table
from embedgeom.results import AnalysisResult

runner = CliRunner()
KW = {"data": "sample:polarity,sample:lee", "max_texts": 40, "cache": False, "dtype": "float32", "device": "cpu",
      "poolings": "mean"}


def _synthetic(name: str, x: np.ndarray, *, content: str = "same-texts") -> AnalysisResult:
    """An analysis of precomputed vectors ``x`` (one task, one pooling, one layer) with two measured metrics."""
    metrics = [{"task": "synthetic", "pooling": "mean", "layer": 1, "metric": m,
                **M.confidence_interval(m, x, groups=10).as_dict()} for m in ("uniformity", "effective_rank")]
    return AnalysisResult({"num_layers": 1, "hidden_size": x.shape[1]},
                          {"synthetic": {"n_items": len(x), "content_hash": content, "items": "texts"}},
                          {"protocol": "default", "confidence": 0.95}, metrics, [],
                          {"emb|synthetic|mean|1": x.astype(np.float32)}, name=name)


def test_a_384_d_and_a_768_d_model_are_compared_with_a_warning():
    rng = np.random.default_rng(0)
    small = _synthetic("small", rng.standard_normal((60, 384)))
    large = _synthetic("big", rng.standard_normal((60, 768)))
    with pytest.warns(IncomparableWarning) as caught:
        cmp = eg.compare(small, large, groups=10)
    (w,) = [w for w in caught if w.category is IncomparableWarning]
    text = str(w.message)
    assert text.startswith("task 'synthetic': the compared results differ in d (small: n=60, d=384; big: n=60, "
                           "d=768).")
    for part in ("effective rank, RankMe, stable rank, participation ratio, spectral entropy and rank at 90% variance "
                 "scale with n and d", "alpha-ReQ is fitted over an eigenvalue window set by n and d",
                 "Comparable across d: uniformity, alignment and mean cosine",
                 "Every interval is for the value at its own n"):
        assert part in text
    row = next(r for r in cmp.differences if r["name"] == "effective_rank")
    assert (row["d_a"], row["d_b"]) == (384, 768) and cmp.options["n"] == {"synthetic": 60}
    # the same models as a table: one row each, n and d as columns, and the same warning
    with pytest.warns(IncomparableWarning, match=r"differ in d \(small: n=60, d=384; big: n=60, d=768\)"):
        frame = models_table([small, large])
    assert frame[["model", "n", "d"]].values.tolist() == [["small", 60, 384], ["big", 60, 768]]


def test_results_of_different_n_warn_in_the_table_and_are_refused_as_pairs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((80, 16))
    a, b = _synthetic("n80", x), _synthetic("n50", x[:50], content="other-texts")
    with pytest.warns(IncomparableWarning, match=r"differ in n \(n80: n=80, d=16; n50: n=50, d=16\)"):
        frame = models_table([a, b])
    assert frame["n"].tolist() == [80, 50]
    assert frame["effective_rank"].tolist() == pytest.approx([M.effective_rank(x), M.effective_rank(x[:50])])
    with pytest.raises(ValueError, match=r"task 'synthetic' was measured on different texts than in a \(n = 80 vs "
                                         r"50 items; content hash other-texts vs same-texts|n = 80 vs 50 items"):
        eg.compare(a, b)


def test_models_table_validates_its_arguments():
    rng = np.random.default_rng(2)
    a = _synthetic("a", rng.standard_normal((30, 8)))
    with pytest.raises(ValueError, match="metrics: expected names of metrics the results measured"):
        models_table([a], metrics=("uniformity", "no_such_metric"))
    with pytest.raises(ValueError, match="layer: expected an integer layer or None"):
        models_table([a], layer="last")
    with pytest.raises(ValueError, match="results: expected at least one analysis result"):
        models_table([])
    assert list(models_table([a], metrics="uniformity").columns) == [
        "model", "task", "pooling", "layer", "n", "d", "confidence", "uniformity", "uniformity_low",
        "uniformity_high"]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three tiny BERTs (d = 32, 48, 32) on polarity (probe accuracy) and lee (probe Spearman), saved."""
    from tests.fixtures import make_tiny_bert

    root = tmp_path_factory.mktemp("tables")
    out = []
    for i, (seed, hidden) in enumerate(((0, 32), (3, 48), (4, 32))):
        res = eg.analyze(make_tiny_bert(root / f"m{i}", seed=seed, hidden=hidden), name=f"m{i}", **KW)
        res.save(root / f"r{i}")
        out.append(res)
    return root, out


def test_models_table_carries_each_results_metrics_and_probe_rows(three):
    _, results = three
    with pytest.warns(IncomparableWarning, match="differ in d"):
        frame = models_table(results)
    assert len(frame) == 3 * 2  # model x task at the one pooling and layer
    z = norm.ppf(0.975)
    for res in results:
        for task in ("polarity", "lee"):
            row = frame[(frame["model"] == res.name) & (frame["task"] == task)].iloc[0]
            assert row["n"] == res.tasks[task]["n_items"] and row["layer"] == 2
            assert row["d"] == res.embedding(task, "mean", 2).shape[1]
            for m in ("uniformity", "effective_rank"):
                mr = res.value(task, "mean", 2, m)
                assert (row[m], row[f"{m}_low"], row[f"{m}_high"]) == (mr["value"], mr["low"], mr["high"])
            probes = [p for p in res.probes if p["task"] == task and p["metric"] in ("accuracy", "spearman")]
            assert probes
            for p in probes:
                key = f"{p['probe']}:{p['metric']}"
                lo, hi = (0.0, 1.0) if p["metric"] == "accuracy" else (-1.0, 1.0)
                assert row[key] == p["value"] and row[f"{key}_n"] == p["n"]
                assert row[f"{key}_low"] == pytest.approx(max(lo, p["value"] - z * p["stderr"]), rel=1e-12)
                assert row[f"{key}_high"] == pytest.approx(min(hi, p["value"] + z * p["stderr"]), rel=1e-12)
            other = "lee" if task == "polarity" else "polarity"
            other_keys = {f"{p['probe']}:{p['metric']}" for p in res.probes if p["task"] == other} - {
                f"{p['probe']}:{p['metric']}" for p in probes}
            assert all(math.isnan(row[k]) for k in other_keys if k in row)  # no probe of another task
    assert "normal quantile" in frame.attrs["probe_interval"]


def test_cli_combined_table_json_and_csv(three):
    root, results = three
    dirs = [str(root / f"r{i}") for i in range(3)]
    r = runner.invoke(app, ["compare", *dirs], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    assert "differ in d (m0: n=40, d=32; m1: n=40, d=48; m2: n=40, d=32)" in " ".join(r.stderr.split())
    lines = r.stdout.splitlines()
    # the pairwise header names n per task and d per side (they differ for m1)
    assert "n: polarity 40, lee 42 items per task" in r.stdout
    assert any(ln.startswith("d: m0 32, m1 48: differs") for ln in lines)
    start = lines.index(next(ln for ln in lines if ln.startswith("polarity · mean · each model's last measured")))
    assert "metrics: value ± half-width of the 95% CI; probes: value ± 1.96 s.e. (normal)" in lines[start]
    assert lines[start + 1] == "n: 40 items" and lines[start + 2].startswith("d: differs between models (32, 48")
    header = next(ln for ln in lines[start:] if ln.startswith("┃ model "))
    assert "linear accuracy (n=40)" in header
    with pytest.warns(IncomparableWarning):
        frame = models_table(results)
    for res in results:  # the probe cell of each model: value ± half-width, as the frame has it
        row = frame[(frame["model"] == res.name) & (frame["task"] == "polarity")].iloc[0]
        line = next(ln for ln in lines[start:] if ln.startswith(f"│ {res.name} "))
        half = max(row["linear:accuracy"] - row["linear:accuracy_low"], row["linear:accuracy_high"]
                   - row["linear:accuracy"])
        assert line.rstrip(" │").endswith(f"{row['linear:accuracy']:.4g} ±{half:.2g}")
        assert [c.strip() for c in line.strip("│ ").split("│")][:3] == [res.name, "40", str(row["d"])]

    js = runner.invoke(app, ["compare", *dirs, "--format", "json"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.stdout)
    assert len(data["comparisons"]) == 2 and data["comparisons"][0]["options"]["correction"] == "none"
    got = pd.DataFrame(data["models"])
    pd.testing.assert_frame_equal(got[frame.columns], frame, check_dtype=False)

    csv = runner.invoke(app, ["compare", *dirs, "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    table = pd.read_csv(io.StringIO(csv.stdout), low_memory=False)
    models = table[table["table"] == "models"].reset_index(drop=True)
    assert set(table["table"]) == {"differences", "similarity", "models"}
    for col in ("linear:accuracy", "linear:accuracy_low", "cosine:spearman", "effective_rank", "n", "d"):
        np.testing.assert_allclose(models[col].astype(float), frame[col].astype(float), rtol=1e-9, equal_nan=True)
