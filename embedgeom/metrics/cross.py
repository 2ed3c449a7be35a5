"""Cross-model similarity on the same texts: linear CKA and mutual k-NN overlap."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from ._kernels import l2_normalise
from ._validate import as_matrix, check_choice, match_device, same_rows

KnnMetric = Literal["cosine", "euclidean"]
KNN_METRICS: tuple[str, ...] = ("cosine", "euclidean")
#: Elements per distance block in knn_overlap (float64): bounds memory to ~64 MiB per block.
KNN_BLOCK_ELEMENTS = 8_000_000


def _pair(x: Any, y: Any, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    xa = as_matrix(x, "x", min_rows=min_rows)
    ya = as_matrix(y, "y", min_rows=min_rows)
    same_rows(xa, ya, "x", "y", same_dim=False)
    return xa, match_device(ya, xa)


def _centred64(x: torch.Tensor) -> torch.Tensor:
    x64 = x.to(torch.float64)
    return x64 - x64.mean(dim=0)


def _hsic_terms(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> float:
    """tr(K L) for linear kernels K = X X^T, L = Y Y^T on centred features, or its unbiased estimator."""
    cross = torch.linalg.matrix_norm(x.T @ y) ** 2
    if not debiased:
        return float(cross)
    n = x.shape[0]
    sx = (x * x).sum(dim=1)
    sy = (y * y).sum(dim=1)
    tr = cross - (sx * sy).sum()
    colx, coly = x.sum(dim=0), y.sum(dim=0)
    one_k_one = colx @ colx - sx.sum()
    one_l_one = coly @ coly - sy.sum()
    k1 = x @ colx - sx
    l1 = y @ coly - sy
    hsic = tr + one_k_one * one_l_one / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)
    return float(hsic / (n * (n - 3)))


def linear_cka(x: Any, y: Any, *, debiased: bool = False) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two embeddings of the same texts.

    ``CKA = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` on column-centred features, float64,
    O(n d^2). 1 = the same geometry up to rotation and isotropic scaling. Dimensions may differ.
    ``debiased=True`` replaces each HSIC by the unbiased estimator of Song et al. (2012) (as in
    Kornblith's reference code), removing the upward bias of CKA at small n relative to d; needs n >= 4.
    """
    xa, ya = _pair(x, y, min_rows=4 if debiased else 2)
    xc, yc = _centred64(xa), _centred64(ya)
    num = _hsic_terms(xc, yc, debiased)
    den = math.sqrt(abs(_hsic_terms(xc, xc, debiased)) * abs(_hsic_terms(yc, yc, debiased)))
    if den == 0.0:
        raise ValueError("x, y: expected embeddings that vary across texts, got a constant set (zero "
                         "variance). Check the encoder outputs.")
    return num / den


def _knn_mask(block: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of each row's k nearest columns, ties broken toward the lower column index."""
    kth = torch.topk(block, k, dim=1, largest=False).values.max(dim=1).values.unsqueeze(1)
    lt = block < kth
    eq = block == kth
    need = (k - lt.sum(dim=1)).unsqueeze(1)
    return lt | (eq & (eq.cumsum(dim=1) <= need))


def _distances(q: torch.Tensor, a: torch.Tensor, metric: str, sq: torch.Tensor | None) -> torch.Tensor:
    if metric == "cosine":
        return 1.0 - q @ a.T
    assert sq is not None
    return ((q * q).sum(dim=1, keepdim=True) + sq.unsqueeze(0) - 2.0 * (q @ a.T)).clamp_(min=0.0)


def knn_overlap_rows(x: Any, y: Any, k: int = 10, *, metric: KnnMetric = "cosine") -> torch.Tensor:
    """Per-row overlap |N_x(i) ∩ N_y(i)| / k (float64 tensor); see :func:`knn_overlap`."""
    xa, ya = _pair(x, y)
    check_choice("metric", metric, KNN_METRICS)
    n = xa.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k: expected an integer between 1 and n - 1 = {n - 1}, got {k!r}. "
                         "Pick fewer neighbours or pass more texts.")
    if metric == "cosine":
        xa = l2_normalise(as_matrix(xa, "x", nonzero_rows=True))
        ya = l2_normalise(as_matrix(ya, "y", nonzero_rows=True))
    x64, y64 = xa.to(torch.float64), ya.to(torch.float64)
    sqx = (x64 * x64).sum(dim=1) if metric == "euclidean" else None
    sqy = (y64 * y64).sum(dim=1) if metric == "euclidean" else None
    rows = max(1, min(n, KNN_BLOCK_ELEMENTS // n))
    out = torch.empty(n, dtype=torch.float64, device=x64.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        idx = torch.arange(s, e, device=x64.device)
        masks = []
        for q, a, sq in ((x64, x64, sqx), (y64, y64, sqy)):
            block = _distances(q[s:e], a, metric, sq)
            block[idx - s, idx] = math.inf  # a point is not its own neighbour
            masks.append(_knn_mask(block, k))
        out[s:e] = (masks[0] & masks[1]).sum(dim=1).to(torch.float64) / k
    return out


def knn_overlap(x: Any, y: Any, k: int = 10, *, metric: KnnMetric = "cosine") -> float:
    """Mutual k-nearest-neighbour overlap between two embeddings of the same texts (Huh et al. 2024):
    ``mean_i |N_x(i) ∩ N_y(i)| / k``, where ``N(i)`` are the k nearest other rows.

    Distances in float64; ``metric="cosine"`` (default, 1 - cosine) or ``"euclidean"``. Ties are broken
    deterministically toward the lower row index. 1 = identical neighbourhoods; chance level is about
    k / (n - 1). Memory O(block x n).
    """
    return float(knn_overlap_rows(x, y, k, metric=metric).mean())
