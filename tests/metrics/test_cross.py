"""linear CKA and k-NN overlap against explicit n x n Gram / brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from embedgeom import metrics as M
from tests.fixtures import random_rotation


def gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. eq. (2) with explicit centring matrices: HSIC(K, L) = tr(K H L H)."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC, written directly on n x n matrices with zeroed diagonals."""
    n = k.shape[0]
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(n)
    term = np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (one @ k @ l_ @ one)
    return float(term / (n * (n - 3)))


def gram_cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    k, l_ = x @ x.T, y @ y.T
    return unbiased_hsic(k, l_) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l_, l_))


def test_linear_cka_matches_gram_reference(rng):
    x = rng.standard_normal((60, 8))
    y = x @ rng.standard_normal((8, 5)) + 0.5 * rng.standard_normal((60, 5))
    assert M.linear_cka(x, y) == pytest.approx(gram_cka(x, y), rel=1e-10)
    assert M.linear_cka(x, y, debiased=True) == pytest.approx(gram_cka_debiased(x, y), rel=1e-9)


def test_linear_cka_invariances_and_identity(rng):
    x = rng.standard_normal((100, 12))
    assert M.linear_cka(x, x) == pytest.approx(1.0)
    assert M.linear_cka(x, x, debiased=True) == pytest.approx(1.0)
    y = 3.0 * x @ random_rotation(12, rng) + 5.0
    assert M.linear_cka(x, y) == pytest.approx(1.0)


def test_debiased_cka_removes_small_sample_bias(rng):
    # independent random features, n small relative to d: biased CKA is far from 0, debiased is near 0
    x, y = rng.standard_normal((2, 40, 200))
    assert M.linear_cka(x, y) > 0.5
    assert abs(M.linear_cka(x, y, debiased=True)) < 0.1


def brute_knn(x: np.ndarray, k: int, metric: str) -> list[set[int]]:
    if metric == "cosine":
        z = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist = 1.0 - z @ z.T
    else:
        dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    out = []
    for i in range(len(x)):
        order = [j for j in np.lexsort((np.arange(len(x)), dist[i])) if j != i]  # distance, then index
        out.append(set(order[:k]))
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_overlap_matches_brute_force(rng, metric):
    x = rng.standard_normal((90, 6))
    y = x + 0.3 * rng.standard_normal((90, 6))
    nx, ny = brute_knn(x, 5, metric), brute_knn(y, 5, metric)
    ref = np.mean([len(a & b) / 5 for a, b in zip(nx, ny, strict=True)])
    assert M.knn_overlap(x, y, 5, metric=metric) == pytest.approx(ref, abs=1e-12)


def test_knn_overlap_ties_are_deterministic():
    # points on a grid: many equal distances; tie-break toward the lower index, matching the brute force
    g = np.array([[i, j] for i in range(6) for j in range(6)], dtype=np.float64) + 1.0
    perm_y = g.copy()
    ref = np.mean([len(a & b) / 4 for a, b in zip(brute_knn(g, 4, "euclidean"),
                                                   brute_knn(perm_y, 4, "euclidean"), strict=True)])
    assert M.knn_overlap(g, perm_y, 4, metric="euclidean") == pytest.approx(ref) == pytest.approx(1.0)
    dup = np.repeat(np.eye(3), 4, axis=0) + 0.0
    first = M.knn_overlap(dup, dup[:, ::-1].copy(), 3)
    assert first == M.knn_overlap(dup, dup[:, ::-1].copy(), 3)


def test_knn_overlap_bounds(rng):
    x = rng.standard_normal((200, 10))
    assert M.knn_overlap(x, x, 10) == 1.0
    y = rng.standard_normal((200, 10))
    assert M.knn_overlap(x, y, 10) < 0.2  # chance is about 10/199
