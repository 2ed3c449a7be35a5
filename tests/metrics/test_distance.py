"""uniformity / alignment / mean_cosine against closed forms and independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from embedgeom import metrics as M
from tests.fixtures import random_rotation, sphere_uniformity


def ref_uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """Independent reference: scipy's pdist in float64 on normalised rows."""
    z = x.astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return float(np.log(np.mean(np.exp(-t * pdist(z, "sqeuclidean")))))



def test_uniformity_matches_pdist_reference(rng):
    x = rng.standard_normal((700, 32))
    assert M.uniformity(x) == pytest.approx(ref_uniformity(x), abs=1e-12)
    assert M.uniformity(x, 0.5) == pytest.approx(ref_uniformity(x, 0.5), abs=1e-12)


@pytest.mark.parametrize("d", [2, 3, 10, 50])
def test_uniformity_regular_simplex_closed_form(d):
    # d + 1 vertices of a regular simplex: every pair has cosine -1/d, so ||z_i - z_j||^2 = 2 + 2/d.
    e = np.eye(d + 1)
    v = e - e.mean(axis=0)
    t = 2.0
    assert M.uniformity(v, t) == pytest.approx(-t * (2.0 + 2.0 / d), abs=1e-9)


def test_uniformity_identical_points_is_zero():
    x = np.tile([[1.0, 2.0, 3.0]], (5, 1))
    with pytest.warns(M.CollapsedEmbeddingsWarning, match="all 5 rows are identical"):
        assert M.uniformity(x) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_converges_to_sphere_closed_form(rng):
    d, t = 8, 2.0
    x = rng.standard_normal((6000, d))
    ci = M.confidence_interval("uniformity", x)
    truth = sphere_uniformity(d, t)
    assert ci.low - 1e-3 <= truth <= ci.high + 1e-3
    assert abs(ci.value - truth) < 4 * ci.stderr + 1e-4


def test_uniformity_tiles_do_not_change_the_value(rng):
    x = torch.from_numpy(rng.standard_normal((301, 24)))
    ref = float(M.uniformity(x, tile=4096))
    for tile in (1, 7, 128, 300):
        assert float(M.uniformity(x, tile=tile)) == pytest.approx(ref, abs=1e-12)


def test_uniformity_float32_matches_float64(rng):
    x = rng.standard_normal((1500, 64))
    assert M.uniformity(x.astype(np.float32)) == pytest.approx(M.uniformity(x), abs=1e-6)


def test_uniformity_large_t_does_not_underflow(rng):
    x = rng.standard_normal((300, 4))
    x[1] = x[0] + 1e-4  # one near-duplicate pair dominates at large t
    u = M.uniformity(x.astype(np.float32), 50.0)
    assert math.isfinite(u)
    assert u == pytest.approx(ref_uniformity(x, 50.0), abs=1e-3)


def test_uniformity_invariances(rng):
    x = rng.standard_normal((400, 16))
    base = M.uniformity(x)
    assert M.uniformity(x[rng.permutation(400)]) == pytest.approx(base, abs=1e-12)
    assert M.uniformity(x @ random_rotation(16, rng)) == pytest.approx(base, abs=1e-10)
    scales = rng.uniform(0.1, 10.0, size=(400, 1))
    assert M.uniformity(x * scales) == pytest.approx(base, abs=1e-10)


def test_uniformity_sampled_agrees_within_reported_error(rng):
    x = rng.standard_normal((3000, 32))
    exact = float(M.uniformity(x))
    hits = 0
    for seed in range(20):
        est = M.uniformity(x, method="sampled", n_pairs=20_000, seed=seed)
        assert est.method == "sampled" and est.stderr > 0 and est.n == 3000
        hits += abs(float(est) - exact) <= 1.96 * est.stderr
    # about 95% of the 20 intervals should cover the exact value; allow sampling noise
    assert hits >= 16
    again = M.uniformity(x, method="sampled", n_pairs=20_000, seed=3)
    assert float(again) == float(M.uniformity(x, method="sampled", n_pairs=20_000, seed=3))


def test_uniformity_auto_is_exact_below_limit(rng):
    est = M.uniformity(rng.standard_normal((50, 3)), method="auto")
    assert est.method == "exact" and est.stderr == 0.0 and est.n_pairs == 50 * 49 // 2


def test_estimate_behaves_like_a_float(rng):
    import json
    import pickle

    est = M.uniformity(rng.standard_normal((20, 3)))
    assert isinstance(est, float)
    assert json.loads(json.dumps({"u": est}))["u"] == pytest.approx(float(est))
    back = pickle.loads(pickle.dumps(est))
    assert back.method == "exact" and float(back) == float(est)


def test_alignment_closed_forms(rng):
    x = rng.standard_normal((50, 8))
    assert M.alignment(x, x) == 0.0
    assert M.alignment(x, 3.0 * x) == pytest.approx(0.0, abs=1e-24)
    assert M.alignment(x, -x) == pytest.approx(4.0)  # antipodal: ||2z||^2 = 4
    assert M.alignment(x, -x, alpha=1.0) == pytest.approx(2.0)


def test_alignment_matches_numpy(rng):
    x, y = rng.standard_normal((2, 80, 12))
    zx = x / np.linalg.norm(x, axis=1, keepdims=True)
    zy = y / np.linalg.norm(y, axis=1, keepdims=True)
    for alpha in (1.0, 2.0, 4.0):
        ref = np.mean(np.linalg.norm(zx - zy, axis=1) ** alpha)
        assert M.alignment(x, y, alpha) == pytest.approx(ref, rel=1e-12)


def test_mean_cosine_matches_brute_force(rng):
    x = rng.standard_normal((120, 10)) + 0.5
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = z @ z.T
    ref = (g.sum() - np.trace(g)) / (120 * 119)
    assert M.mean_cosine(x) == pytest.approx(ref, abs=1e-12)
    with pytest.warns(M.CollapsedEmbeddingsWarning):
        assert M.mean_cosine(np.tile([[1.0, 1.0]], (4, 1))) == pytest.approx(1.0)
