"""Spectral metrics against closed forms, numpy/scikit-learn references and the IsoScore package."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedgeom import metrics as M
from tests.fixtures import random_rotation


def data_with_spectrum(eigs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n rows whose *sample* covariance has exactly the eigenvalues ``eigs`` (d = len(eigs))."""
    d = eigs.size
    a = rng.standard_normal((n, d))
    a -= a.mean(axis=0)
    q, _ = np.linalg.qr(a)  # orthonormal columns, each orthogonal to the ones vector
    return math.sqrt(n - 1) * (q * np.sqrt(eigs)) @ random_rotation(d, rng) + 3.0


def ref_entropy_rank(s: np.ndarray) -> float:
    p = s[s > 1e-12 * s.max()]
    p = p / p.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def test_eigenspectrum_matches_numpy_cov(rng):
    x = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20))
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    ev = M.eigenspectrum(x)
    assert ev.dtype == np.float64 and ev.shape == (20,)
    np.testing.assert_allclose(ev, ref, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(ev) <= 0)


def test_isotropic_gaussian_effective_rank_near_d(rng):
    d = 64
    x = rng.standard_normal((20000, d))
    assert M.effective_rank(x) == pytest.approx(d, rel=0.01)
    assert M.participation_ratio(x) == pytest.approx(d, rel=0.03)
    assert M.isoscore(x) > 0.97


def test_exact_spectrum_gives_closed_forms(rng):
    eigs = np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.5])
    x = data_with_spectrum(eigs, 200, rng)
    np.testing.assert_allclose(M.eigenspectrum(x), eigs, rtol=1e-9)
    s = np.sqrt(eigs)
    assert M.effective_rank(x) == pytest.approx(ref_entropy_rank(s), rel=1e-9)
    assert M.stable_rank(x) == pytest.approx(eigs.sum() / 8.0, rel=1e-9)
    assert M.participation_ratio(x) == pytest.approx(eigs.sum() ** 2 / (eigs**2).sum(), rel=1e-9)
    p = eigs / eigs.sum()
    assert M.spectral_entropy(x) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-9)
    assert M.spectral_entropy(x, normalize=True) == pytest.approx(-(p * np.log(p)).sum() / np.log(6))
    # cumulative: 8/16.5 = .485, 12/16.5 = .727, 14/16.5 = .848, 15/16.5 = .909
    assert M.rank_at_variance(x, 0.9) == 4
    assert M.rank_at_variance(x, 0.5) == 2
    assert M.rank_at_variance(x, 1.0) == 6


@pytest.mark.parametrize("k", [1, 3, 10])
def test_rank_k_data_has_rank_k(rng, k):
    x = rng.standard_normal((500, k)) @ rng.standard_normal((k, 48))
    x = x.astype(np.float32)
    ev = M.eigenspectrum(x)
    assert np.count_nonzero(ev) == k
    assert M.effective_rank(x) <= k + 1e-9
    assert M.effective_rank(x) > 0.5 * k
    assert M.rank_at_variance(x, 1.0) <= k


def test_power_law_alpha_is_recovered_exactly(rng):
    alpha = 1.3
    eigs = np.arange(1, 41, dtype=np.float64) ** -alpha
    x = data_with_spectrum(eigs, 400, rng)
    fit = M.alpha_req(x, window=(1, None))
    assert fit.alpha == pytest.approx(alpha, rel=1e-8)
    assert fit.r2 == pytest.approx(1.0, abs=1e-10)
    assert fit.window == (1, 40) and fit.n_points == 40
    default = M.alpha_req(x)
    assert default.window == (2, 20) and default.alpha == pytest.approx(alpha, rel=1e-8)


def test_alpha_weights_each_decade_equally(rng):
    # a spectrum that bends: slope 1 over ranks 1-10, slope 3 over 10-100. Unweighted least squares is pulled to
    # ~3 by the 90 tail ranks; with 1/k weights both decades count the same and the slope lands in between.
    k = np.arange(1, 101, dtype=np.float64)
    eigs = np.where(k <= 10, k**-1.0, 10.0**2 * k**-3.0)
    x = data_with_spectrum(eigs, 400, rng)
    fit = M.alpha_req(x, window=(1, 100))
    unweighted = -np.polyfit(np.log(k), np.log(eigs), 1)[0]
    assert 1.5 < fit.alpha < unweighted - 0.2
    assert 0.0 < fit.r2 < 1.0


def test_alpha_window_stops_at_numerical_rank(rng):
    x = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 30))
    fit = M.alpha_req(x, window=(1, 1000))
    assert fit.window == (1, 5)
    with pytest.raises(ValueError, match="window"):
        M.alpha_req(x, window=(4, None))


def test_rankme_matches_numpy_uncentred_svd(rng):
    x = rng.standard_normal((400, 30)) + 2.0
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    ref = float(np.exp(-(p * np.log(p)).sum()))
    assert M.rankme(x) == pytest.approx(ref, rel=1e-9)
    # centring matters: the common mean is one extra direction for RankMe, not for effective rank
    assert M.rankme(x) != pytest.approx(M.effective_rank(x), rel=1e-3)


def test_effective_rank_matches_numpy_centred_svd(rng):
    x = rng.standard_normal((250, 40)) @ np.diag(np.linspace(0.1, 3.0, 40))
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    assert M.effective_rank(x) == pytest.approx(ref_entropy_rank(s), rel=1e-9)


def test_rank_at_variance_matches_sklearn_pca(rng):
    from sklearn.decomposition import PCA

    x = rng.standard_normal((600, 50)) @ rng.standard_normal((50, 50))
    ratio = PCA().fit(x).explained_variance_ratio_
    for q in (0.5, 0.8, 0.9, 0.99):
        assert M.rank_at_variance(x, q) == int(np.searchsorted(np.cumsum(ratio), q) + 1)


def test_isoscore_agrees_with_reference_package(rng):
    from IsoScore.IsoScore import IsoScore as reference_isoscore

    for x in (rng.standard_normal((500, 10)),
              rng.standard_normal((800, 20)) @ np.diag(np.linspace(0.01, 2.0, 20)),
              rng.standard_normal((300, 8)) @ rng.standard_normal((8, 8))):
        # the reference takes (samples, dimensions); it computes sqrt(d) of an int tensor, i.e. in
        # float32, so agreement is limited to ~1e-7 by the reference, not by us.
        ref = float(reference_isoscore(x))
        assert M.isoscore(x) == pytest.approx(ref, abs=1e-6)


def test_n_smaller_than_d_is_defined_and_bounded(rng):
    x = rng.standard_normal((10, 64))
    ev = M.eigenspectrum(x)
    assert ev.shape == (64,) and np.count_nonzero(ev) == 9
    np.testing.assert_allclose(ev[:9], np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1][:9], rtol=1e-9)
    assert M.effective_rank(x) <= 9.0 + 1e-9
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert M.rankme(x) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)


def test_spectral_invariances(rng):
    x = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12))
    rot = random_rotation(12, rng)
    perm = rng.permutation(300)
    for name in ("effective_rank", "stable_rank", "participation_ratio", "spectral_entropy", "isoscore"):
        f = M.REGISTRY[name]
        base = f(x)
        assert f(x[perm]) == pytest.approx(base, rel=1e-9), name
        assert f(x @ rot) == pytest.approx(base, rel=1e-9), name
        assert f(7.5 * x) == pytest.approx(base, rel=1e-9), name
        assert f(x + 100.0) == pytest.approx(base, rel=1e-7), name  # centred: shift-invariant


def test_float32_matches_float64(rng):
    x = rng.standard_normal((2000, 32)) @ np.diag(np.linspace(0.2, 2.0, 32))
    for name in ("effective_rank", "rankme", "stable_rank", "participation_ratio", "isoscore"):
        f = M.REGISTRY[name]
        assert f(x.astype(np.float32)) == pytest.approx(f(x), rel=1e-5), name


def test_spectrum_object_is_reused(rng):
    x = rng.standard_normal((100, 6))
    sp = M.spectrum(x)
    assert M.effective_rank(sp) == M.effective_rank(x)
    assert M.alpha_req(sp, window=(1, None)) == M.alpha_req(x, window=(1, None))
    assert sp.rank == 6 and sp.n == 100 and sp.d == 6
    np.testing.assert_allclose(sp.singular_values, np.linalg.svd(x - x.mean(0), compute_uv=False))


def test_torch_input_and_numpy_input_agree(rng):
    x = rng.standard_normal((200, 16)).astype(np.float32)
    for name in ("effective_rank", "uniformity", "mean_cosine", "isoscore"):
        f = M.REGISTRY[name]
        assert f(torch.from_numpy(x)) == pytest.approx(f(x), rel=1e-12)
