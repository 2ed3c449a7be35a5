"""Post-processing (standardize, all-but-the-top, BERT-whitening) against numpy / scikit-learn references, its one
clear error, and its use in sentence analysis (recorded in the result; the embedding cache keeps raw vectors)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.postprocess import apply_postprocess, fit_postprocess, parse_postprocess


def _data(rng, n=200, d=6):
    return (rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 5.0).astype(np.float32)


@pytest.mark.parametrize(("spec", "canonical"), [("none", "none"), ("standardize", "standardize"),
                                                 (" abtt:3 ", "abtt:3"), ("whiten", "whiten")])
def test_valid_specs(spec, canonical):
    assert str(parse_postprocess(spec)) == canonical


@pytest.mark.parametrize("spec", ["abtt", "abtt:0", "abtt:-1", "abtt:x", "pca", "", None, 3])
def test_invalid_specs_are_one_clear_error(spec):
    with pytest.raises(ValueError, match=r"^postprocess: expected none, standardize, abtt:K \(K an integer >= 1"):
        parse_postprocess(spec)


def test_standardize(rng):
    x = _data(rng)
    x[:, 2] = 7.0  # a constant dimension is only centred
    y = apply_postprocess("standardize", x)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    std = y.std(axis=0)
    np.testing.assert_allclose(np.delete(std, 2), 1.0, rtol=1e-5)
    assert np.all(y[:, 2] == 0.0)


def test_abtt_removes_the_top_principal_directions(rng):
    x = _data(rng)
    y = apply_postprocess("abtt:2", x)
    pca = PCA(n_components=2).fit(x.astype(np.float64))
    xc = x - x.mean(axis=0)
    want = xc - xc @ pca.components_.T @ pca.components_
    np.testing.assert_allclose(y, want, atol=1e-4)
    np.testing.assert_allclose(y @ pca.components_.T, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="abtt:K with K below the dimension d = 6"):
        apply_postprocess("abtt:6", x)


def test_whitening_gives_identity_covariance(rng):
    x = _data(rng)
    y = apply_postprocess("whiten", x)
    c = np.cov(y.T, bias=True)
    np.testing.assert_allclose(c, np.eye(6), atol=1e-4)
    # rank-deficient input: whitened onto its non-degenerate subspace
    low = x[:, :3] @ rng.standard_normal((3, 6))
    y_low = apply_postprocess("whiten", low)
    assert y_low.shape == (200, 3)
    np.testing.assert_allclose(np.cov(y_low.T, bias=True), np.eye(3), atol=1e-3)
    fitted = fit_postprocess("whiten", x)
    with pytest.raises(ValueError, match=r"x: expected an \(n, 6\) array"):
        fitted.transform(x[:, :4])


def test_none_returns_the_vectors_unchanged(rng):
    x = _data(rng)
    assert apply_postprocess("none", x) is x


def test_sentence_analysis_records_and_applies_it_and_the_cache_stays_raw(tiny_encoder, tmp_path):
    kw = {"max_texts": 60, "poolings": "mean", "probes": False, "cache": str(tmp_path / "cache")}
    white = eg.analyze(tiny_encoder, "sample:polarity", postprocess="whiten", **kw)
    raw = eg.analyze(tiny_encoder, "sample:polarity", **kw)
    assert white.options["postprocess"] == "whiten" and raw.options["postprocess"] == "none"
    assert white.value("polarity", "mean", 2, "isoscore")["value"] == pytest.approx(1.0, abs=1e-4)
    assert raw.value("polarity", "mean", 2, "isoscore")["value"] < 0.9
    x_white = white.embedding("polarity", "mean", 2)
    np.testing.assert_allclose(np.cov(x_white.T, bias=True), np.eye(x_white.shape[1]), atol=1e-3)
    # the second analysis read every vector from the cache the first wrote: raw vectors, whatever was measured
    assert raw.tasks["polarity"]["encode"]["cache"]["hits"] == 1
    np.testing.assert_allclose(raw.embedding("polarity", "mean", 2),
                               eg.encode(tiny_encoder, list(eg.load_texts("sample:polarity", max_texts=60).texts),
                                         poolings="mean", layers=-1).get("mean"), atol=1e-6)
    assert M.effective_rank(raw.embedding("polarity", "mean", 2)) < M.effective_rank(x_white)
    with pytest.raises(ValueError, match=r"^postprocess: expected none, standardize, abtt:K"):
        eg.AnalysisOptions.create(postprocess="whitening")
