"""Precomputed embeddings (`analyze --embeddings`) and the block-wise metric engine behind them: the numbers equal
the in-memory path's (confidence_intervals, measure's histogram, the probes), every file format gives the same
result, and bad inputs are refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.cli import app
from embedgeom.measure import cosine_histogram
from embedgeom.metrics.tiled import RowSource, streamed_intervals, streamed_measure
from embedgeom.probes import classification_probe
from embedgeom.vectors import PRECOMPUTED, analyze_embeddings, open_vectors

NAMES = list(M.names("set"))


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


@pytest.fixture(scope="module")
def vecs() -> np.ndarray:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((700, 24)) * np.linspace(3, 0.2, 24)  # anisotropic spectrum
    return (base + 0.4).astype(np.float32)


@pytest.mark.parametrize("block", [64, 700, 4096])
def test_streamed_intervals_equal_the_in_memory_ones(vecs, block):
    ref = M.confidence_intervals(NAMES, vecs, groups=10, seed=3, confidence=0.9)
    got, eigen = streamed_measure(NAMES, RowSource.of_array(vecs), groups=10, seed=3, confidence=0.9, block=block)
    for name in NAMES:
        assert _close(got[name].value, ref[name].value), name
        assert _close(got[name].stderr, ref[name].stderr, 1e-7), name
        assert got[name].method == ref[name].method and got[name].replicates == ref[name].replicates
    np.testing.assert_allclose(eigen, M.eigenspectrum(vecs), rtol=1e-9, atol=1e-12)


def test_uniformity_of_blocks_against_brute_force(rng):
    x = rng.standard_normal((90, 5))
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(90, 1)
    want = np.log(np.exp(-2.0 * d2[iu]).mean())
    got = streamed_intervals(["uniformity", "mean_cosine"], RowSource.of_array(x), block=13)
    assert _close(got["uniformity"].value, want, 1e-10)
    assert _close(got["mean_cosine"].value, (z @ z.T)[iu].mean(), 1e-10)


def test_fewer_rows_than_dimensions_take_the_small_set_path(rng):
    x = rng.standard_normal((30, 64)).astype(np.float32)
    got = streamed_intervals(["effective_rank"], RowSource.of_array(x), block=7)
    assert _close(got["effective_rank"].value, M.confidence_interval("effective_rank", x).value)


def test_streamed_refusals(vecs):
    src = RowSource.of_array(vecs)
    with pytest.raises(ValueError, match="block: expected a positive number of rows"):
        streamed_intervals(["uniformity"], src, block=0)
    with pytest.raises(ValueError, match="alignment"):
        streamed_intervals(["alignment"], src)
    with pytest.raises(ValueError, match="source: expected a RowSource"):
        streamed_intervals(["uniformity"], vecs)
    zero = vecs.copy()
    zero[5] = 0
    with pytest.raises(ValueError, match="row 5 is all zeros"):
        streamed_intervals(["uniformity"], RowSource.of_array(zero), block=64)


def _write_formats(x: np.ndarray, tmp) -> dict[str, object]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save_file

    np.save(tmp / "v.npy", x)
    save_file({"vectors": x, "ids": np.arange(len(x), dtype=np.int64)}, str(tmp / "v.safetensors"))
    col = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
    pq.write_table(pa.table({"id": np.arange(len(x)), "embedding": col}), tmp / "v.parquet", row_group_size=97)
    return {"npy": (tmp / "v.npy", None), "safetensors": (tmp / "v.safetensors", "vectors"),
            "parquet": (tmp / "v.parquet", None)}


def test_every_file_format_reads_the_same_rows(vecs, tmp_path):
    for fmt, (path, key) in _write_formats(vecs, tmp_path).items():
        vf = open_vectors(path, key=key)
        assert (vf.n, vf.d) == vecs.shape, fmt
        np.testing.assert_array_equal(vf.source.read(90, 300), vecs[90:300])
        idx = np.array([0, 96, 97, 98, 699])
        np.testing.assert_array_equal(vf.source.take(idx), vecs[idx])


def test_a_memory_mapped_npy_is_not_read_whole(vecs, tmp_path):
    np.save(tmp_path / "v.npy", vecs)
    vf = open_vectors(tmp_path / "v.npy")
    first = vf.source.read(0, 10)
    assert first.shape == (10, vecs.shape[1]) and vf.dtype == "float32"


def test_analysis_of_a_file_equals_the_in_memory_metrics(vecs, tmp_path):
    np.save(tmp_path / "v.npy", vecs)
    labels = (vecs[:, 0] > np.median(vecs[:, 0])).astype(np.int64)
    pairs = np.stack([np.arange(0, 698, 2), np.arange(1, 699, 2)], axis=1)
    res = analyze_embeddings(tmp_path / "v.npy", labels=labels, pairs=pairs, block=128, groups=10, seed=2)
    frame = res.to_frame()
    metrics = frame[frame.kind == "metric"].set_index("name")
    ref = M.confidence_intervals(NAMES, vecs, groups=10, seed=2)
    for name in NAMES:
        assert _close(float(metrics.loc[name, "value"]), ref[name].value), name
    align = M.confidence_interval("alignment", vecs[pairs[:, 0]], vecs[pairs[:, 1]])
    assert _close(float(metrics.loc["alignment", "value"]), align.value)
    assert set(frame.pooling) == {PRECOMPUTED} and set(frame.layer) == {0}
    counts, edges = cosine_histogram(vecs, 2)
    np.testing.assert_array_equal(res.arrays[f"hist|v|{PRECOMPUTED}|0"], counts)
    np.testing.assert_array_equal(res.arrays[f"hist_edges|v|{PRECOMPUTED}|0"], edges)
    acc = next(s for s in classification_probe(vecs, labels, seed=2) if s.metric == "accuracy")
    probes = frame[frame.kind == "probe"].set_index("name")
    assert _close(float(probes.loc["linear:accuracy", "value"]), acc.value)
    assert res.checkpoint["kind"] == PRECOMPUTED and res.checkpoint["hidden_size"] == vecs.shape[1]
    assert res.options["input"] == "precomputed embeddings"


def test_formats_give_the_same_result_and_results_round_trip(vecs, tmp_path):
    values = {}
    for fmt, (path, key) in _write_formats(vecs, tmp_path).items():
        res = analyze_embeddings(path, key=key, probes=False, block=200)
        values[fmt] = res.to_frame().set_index("name")["value"]
        res.save(tmp_path / f"out-{fmt}")
        back = eg.AnalysisResult.load(tmp_path / f"out-{fmt}")
        assert back.to_frame()["value"].tolist() == res.to_frame()["value"].tolist()
    assert (values["npy"] == values["safetensors"]).all() and (values["npy"] == values["parquet"]).all()


def test_two_vector_files_of_the_same_items_compare(vecs, tmp_path, rng):
    from tests.fixtures import random_rotation

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "items.npy", vecs)  # the task is named after the file: the same name pairs them
    np.save(tmp_path / "b" / "items.npy", (vecs @ random_rotation(vecs.shape[1], rng)).astype(np.float32) * 2.0)
    ra = analyze_embeddings(tmp_path / "a" / "items.npy", probes=False, name="A")
    rb = analyze_embeddings(tmp_path / "b" / "items.npy", probes=False, name="B")
    cmp = eg.compare(ra, rb)
    rows = {d["name"]: d for d in cmp.differences}
    # a rotation and a scale change no single-set metric: every difference is 0 up to float32 rounding
    assert abs(rows["uniformity"]["diff"]) < 1e-4 and abs(rows["effective_rank"]["diff"]) < 1e-3
    assert rows["uniformity"]["pooling"] == PRECOMPUTED


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"labels": np.zeros(5, dtype=np.int64)}, "labels: expected one label per vector"),
    ({"labels": np.array(["a"] * 700)}, "labels: expected integer class ids or float scores"),
    ({"labels": np.full(700, np.nan)}, "labels: expected finite scores"),
    ({"pairs": np.array([[0, 700]])}, r"pairs: expected row indices of two different vectors in \[0, 700\)"),
    ({"pairs": np.array([[3, 3]])}, "paired with itself"),
    ({"scores": np.zeros(3)}, "scores: expected pairs as well"),
    ({"pairs": np.array([[0, 1], [2, 3]]), "scores": np.zeros(3)}, "scores: expected 2 finite scores"),
    ({"max_texts": 10}, "max_texts: does not apply to precomputed embeddings"),
    ({"protocol": "paper"}, "protocol: precomputed embeddings are analysed with the default protocol"),
])
def test_bad_structure_is_refused_in_one_line(vecs, tmp_path, kwargs, match):
    np.save(tmp_path / "v.npy", vecs)
    with pytest.raises(ValueError, match=match) as err:
        analyze_embeddings(tmp_path / "v.npy", **kwargs)
    assert "\n" not in str(err.value)


def test_bad_files_are_refused_in_one_line(tmp_path):
    from safetensors.numpy import save_file

    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((10, 3), dtype=np.int64))
    save_file({"a": np.ones((4, 2), np.float32), "b": np.ones((4, 2), np.float32)}, str(tmp_path / "two.safetensors"))
    (tmp_path / "x.csv").write_text("1,2\n")
    cases = [(tmp_path / "flat.npy", {}, r"expected an \(n, d\) array"),
             (tmp_path / "ints.npy", {}, "expected floating-point vectors"),
             (tmp_path / "missing.npy", {}, "does not exist"),
             (tmp_path / "x.csv", {}, "expected a .npy, .safetensors, .parquet file"),
             (tmp_path / "two.safetensors", {}, "found 2"),
             (tmp_path / "two.safetensors", {"key": "c"}, "key: expected one of the tensors")]
    for path, kw, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            open_vectors(path, **kw)
        assert "\n" not in str(err.value)


def test_cli_analyses_a_vector_file(vecs, tmp_path):
    np.save(tmp_path / "v.npy", vecs)
    np.save(tmp_path / "lab.npy", (vecs[:, 1] > 0).astype(np.int64))
    out = CliRunner().invoke(app, ["analyze", "--embeddings", str(tmp_path / "v.npy"), "--labels",
                                   str(tmp_path / "lab.npy"), "--format", "json", "--out", str(tmp_path / "res"), "-q"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    got = {r["metric"]: r["value"] for r in doc["metrics"]}
    assert _close(got["effective_rank"], M.effective_rank(vecs))
    assert any(r["probe"] == "linear" for r in doc["probes"])
    assert eg.AnalysisResult.load(tmp_path / "res").checkpoint["kind"] == PRECOMPUTED


@pytest.mark.parametrize(("args", "match"), [
    ([], "CKPT: expected a checkpoint to analyse"),
    (["model-dir", "--embeddings", "v.npy"], "expected a checkpoint or --embeddings, got both"),
    (["model-dir", "--labels", "lab.npy"], "--labels: applies only to precomputed vectors"),
])
def test_cli_input_refusals(args, match):
    out = CliRunner().invoke(app, ["analyze", *args])
    assert out.exit_code != 0
    assert match in out.output.replace("\n", " ")


def test_float_labels_are_a_regression_target(vecs, tmp_path):
    np.save(tmp_path / "v.npy", vecs)
    score = vecs[:, :3].sum(axis=1).astype(np.float64)
    res = analyze_embeddings(tmp_path / "v.npy", labels=score)
    probes = res.to_frame().query("kind == 'probe'").set_index("name")
    spearman = [n for n in probes.index if n.endswith(":spearman")]
    assert len(spearman) == 1 and not any(n.endswith(":accuracy") for n in probes.index)
    assert float(probes.loc[spearman[0], "value"]) > 0.9  # three of the dimensions carry the score linearly
    assert res.tasks["v"]["label_task"] == "regression"


@pytest.mark.parametrize("spec", ["standardize", "abtt:3", "whiten"])
def test_postprocessing_a_vector_file_equals_postprocessing_the_array(vecs, tmp_path, spec):
    from embedgeom.postprocess import apply_postprocess

    np.save(tmp_path / "v.npy", vecs)
    res = analyze_embeddings(tmp_path / "v.npy", probes=False, postprocess=spec, block=100, groups=10)
    ref = M.confidence_intervals(NAMES, apply_postprocess(spec, vecs), groups=10)
    got = {r["metric"]: r["value"] for r in res.metrics}
    for name in NAMES:
        assert _close(got[name], ref[name].value, 1e-6), name
    assert res.options["postprocess"] == spec


def test_a_metric_undefined_on_the_set_is_a_nan_row_that_says_why(rng):
    x = np.zeros((300, 8), np.float32)
    x[:, 0] = rng.standard_normal(300)
    x[:, 1] = 1.0  # one direction of variance: alpha-ReQ's power-law fit has too few eigenvalues
    got = streamed_intervals(NAMES, RowSource.of_array(x), block=64)
    assert math.isnan(got["alpha_req"].value) and got["alpha_req"].method.startswith("undefined: window: expected")
    ref = M.confidence_interval("effective_rank", x)
    assert _close(got["effective_rank"].value, ref.value)  # the others are measured as usual
