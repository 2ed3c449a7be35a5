"""analyze()/compare(): numbers equal direct metric calls on the same embeddings; round trips; errors."""

from __future__ import annotations

import numpy as np
import pytest

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.data import load_texts


@pytest.fixture(scope="module")
def res_minilm(minilm):
    return eg.analyze(minilm, ["sample:polarity", "sample:lee"], max_texts=120, poolings="mean,max", seed=1,
                      cache=False)


def test_metrics_equal_direct_calls_on_the_same_embeddings(res_minilm, minilm):
    ts = load_texts("sample:polarity", max_texts=120, seed=1)
    x = eg.encode(minilm, list(ts.texts), poolings=("max",)).get("max")
    row = res_minilm.value("polarity", "max", 6, "effective_rank")
    assert row["value"] == pytest.approx(M.effective_rank(x), rel=1e-6) and row["n"] == 120
    assert row["low"] < row["value"] < row["high"]
    assert res_minilm.value("polarity", "max", 6, "uniformity")["value"] == pytest.approx(M.uniformity(x), abs=1e-6)
    lee = load_texts("sample:lee", max_texts=120, seed=1)
    xl = eg.encode(minilm, list(lee.texts), poolings=("mean",)).get("mean")
    al = res_minilm.value("lee", "mean", 6, "alignment")
    p = lee.positives
    assert al["value"] == pytest.approx(M.alignment(xl[p[:, 0]], xl[p[:, 1]]), rel=1e-6) and al["n"] == len(p)
    np.testing.assert_allclose(res_minilm.spectrum("lee", "mean", 6), M.eigenspectrum(xl), rtol=1e-6, atol=1e-9)


def test_every_metric_and_probe_is_present(res_minilm):
    names = {r["metric"] for r in res_minilm.metrics}
    assert set(M.names("set")) <= names and "alignment" in names
    probes = {(r["task"], r["probe"], r["metric"]) for r in res_minilm.probes}
    assert ("polarity", "linear", "accuracy") in probes and ("lee", "cosine", "spearman") in probes
    assert ("polarity", "gap", "semantic_minus_lexical") in probes
    frame = res_minilm.to_frame()
    assert {"model", "task", "pooling", "layer", "kind", "name", "value", "low", "high", "n"} <= set(frame.columns)
    card = res_minilm.card
    assert card["seed"] == 1 and card["versions"]["torch"]
    assert res_minilm.tasks["polarity"]["content_hash"] and res_minilm.checkpoint["content_hash"]


def test_save_load_round_trip(res_minilm, tmp_path):
    res_minilm.save(tmp_path / "r")
    back = eg.AnalysisResult.load(tmp_path / "r")
    import pandas as pd

    pd.testing.assert_frame_equal(back.to_frame(), res_minilm.to_frame())  # NaN-aware
    assert back.name == res_minilm.name and set(back.arrays) == set(res_minilm.arrays)
    np.testing.assert_array_equal(back.embedding("lee", "max", 6), res_minilm.embedding("lee", "max", 6))
    assert (tmp_path / "r" / "metrics.csv").is_file()
    res_minilm.save(tmp_path / "small", embeddings=False)
    assert not eg.AnalysisResult.load(tmp_path / "small").has_embeddings()


def test_compare_with_itself_is_refused_not_reported_as_zero(res_minilm):
    # every difference would be exactly 0 and every CKA 1: a mistaken call, not a finding
    with pytest.raises(ValueError, match="same embeddings as a"):
        eg.compare(res_minilm, res_minilm)


def test_compare_detects_a_real_difference(res_minilm, tiny_encoder):
    other = eg.analyze(tiny_encoder, ["sample:polarity", "sample:lee"], max_texts=120, poolings="mean,max", seed=1,
                       cache=False)
    cmp = eg.compare(res_minilm, other)
    er = next(r for r in cmp.differences if (r["task"], r["pooling"], r["name"]) == ("polarity", "mean",
                                                                                     "effective_rank"))
    assert er["diff"] < 0 and er["significant"]  # the random tiny model uses far fewer directions
    assert er["value_a"] == pytest.approx(res_minilm.value("polarity", "mean", 6, "effective_rank")["value"])
    cka = next(r for r in cmp.similarity if r["name"] == "linear_cka" and r["task"] == "polarity")
    assert 0 <= cka["value"] < 0.9


def test_compare_refuses_different_texts(res_minilm, minilm):
    other = eg.analyze(minilm, ["sample:polarity", "sample:lee"], max_texts=120, poolings="mean,max", seed=2,
                       probes=False, cache=False)
    with pytest.raises(ValueError, match="different texts"):
        eg.compare(res_minilm, other)


@pytest.fixture(scope="module")
def tiny128(tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    return eg.load_encoder(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-128"), max_positions=128),
                           device="cpu", dtype="float32")


def test_paper_protocol_through_analyze(tiny128):
    from embedgeom.reference.paper import paper_items

    res = eg.analyze(tiny128, ["sample:lee", "sample:polarity"], protocol="paper", max_texts=60, cache=False)
    assert {p for _, p, _ in res.measured()} == {"mean", "max", "weighted", "attention"}
    assert res.tasks["lee"]["items"] == "joined pairs" and res.tasks["lee"]["n_items"] == 60
    items = paper_items("sample:polarity", max_samples=60)
    assert res.tasks["polarity"]["n_texts"] == 60
    # class-conditional alignment by hand: unweighted mean of per-class means of ||z_i - z_j||^4 on unit rows
    x = res.embedding("polarity", "mean", 2).astype(np.float64)
    z = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    per_class = []
    for c in np.unique(items.labels):
        zc = z[items.labels == c]
        d2 = ((zc[:, None, :] - zc[None, :, :]) ** 2).sum(-1)[np.triu_indices(len(zc), 1)]
        per_class.append((d2**2).mean())
    assert res.value("polarity", "mean", 2, "alignment_class_conditional")["value"] == pytest.approx(
        np.mean(per_class), rel=1e-9)
    # spectral entropy normalised by log(min(n, D)) = log(32) here (n = 60 > D = 32)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    p = s / (s.sum() + 1e-12)
    p = p[p > 0]
    assert res.value("polarity", "mean", 2, "spectral_entropy")["value"] == pytest.approx(
        -(p * np.log(p)).sum() / np.log(32), rel=1e-9)
    weighted = res.value("polarity", "weighted", 2, "effective_rank")["value"]
    assert weighted == pytest.approx(res.value("polarity", "mean", 2, "effective_rank")["value"], rel=1e-6)
    assert res.options["protocol"] == "paper" and res.options["protocol_departures"]["seeded_attention_head"]
    assert res.options["protocol_deviations"]["items"].startswith("reference: ")


def test_protocol_both_saves_the_paper_numbers_beside_the_default(tiny128, tmp_path):
    res = eg.analyze(tiny128, "sample:polarity", protocol="both", max_texts=40, poolings="mean", probes=False,
                     cache=False)
    assert res.options["protocol"] == "default" and res.paper is not None
    assert res.paper.options["protocol"] == "paper" and res.paper.tasks["polarity"]["n_items"] == 200
    assert res.tasks["polarity"]["n_items"] == 40  # --max-texts subsamples the default analysis only
    loaded = eg.AnalysisResult.load(res.save(tmp_path / "r"))
    assert loaded.paper is not None
    assert [r["value"] for r in loaded.paper.metrics] == [r["value"] for r in res.paper.metrics]
    (tmp_path / "r" / "paper" / "result.json").write_text((tmp_path / "r" / "paper" / "result.json").read_text()
                                                          .replace('"polarity"', '"polarity2"', 1))
    with pytest.raises(ValueError, match=r"paper/result\.json does not match .*r/result\.json"):
        eg.AnalysisResult.load(tmp_path / "r")


def test_compare_under_the_paper_protocol_reports_point_differences(tiny128, tiny_bert_dir, tmp_path):
    from tests.fixtures import make_tiny_bert

    other = eg.load_encoder(make_tiny_bert(tmp_path / "o", max_positions=128, seed=3), device="cpu", dtype="float32")
    kw = {"data": "sample:polarity", "protocol": "paper", "max_texts": 50, "probes": False, "cache": False}
    a, b = eg.analyze(tiny128, **kw), eg.analyze(other, **kw)
    cmp = eg.compare(a, b)
    row = next(r for r in cmp.differences if r["name"] == "uniformity" and r["pooling"] == "max")
    va = a.value("polarity", "max", 2, "uniformity")["value"]
    vb = b.value("polarity", "max", 2, "uniformity")["value"]
    assert row["diff"] == pytest.approx(vb - va) and np.isnan(row["low"]) and not row["significant"]
    assert {r["name"] for r in cmp.similarity} == {"linear_cka", "linear_cka_debiased", "knn_overlap"}


def test_layer_profile_and_bad_input(tiny_encoder):
    res = eg.analyze(tiny_encoder, "sample:polarity", layers="all", poolings="mean", max_texts=50, probes=False,
                     cache=False)
    assert sorted({k[2] for k in res.measured()}) == [0, 1, 2]
    with pytest.raises(ValueError, match="metrics"):
        eg.analyze(tiny_encoder, "sample:polarity", metrics=["linear_cka"])
    with pytest.raises(ValueError, match="data"):
        eg.analyze(tiny_encoder, [])


def test_analyze_rejects_an_empty_name(tiny_encoder):
    import embedgeom as eg

    with pytest.raises(ValueError, match="name: expected a non-empty label"):
        eg.analyze(tiny_encoder, data="sample:polarity", max_texts=20, name="  ")
