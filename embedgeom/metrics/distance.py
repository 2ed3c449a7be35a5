"""Distance-family metrics on L2-normalised embeddings: uniformity, alignment, mean cosine."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from ._kernels import cuda_matmul_precision, default_tile, gaussian_pair_sums, l2_normalise, sampled_gaussian_pairs
from ._validate import as_matrix, check_choice, check_positive, match_device, same_rows
from .estimates import Estimate

#: Above this many rows ``method="auto"`` switches uniformity from exact to sampled.
EXACT_LIMIT = 1_000_000
#: Pairs drawn by the sampled uniformity estimator unless told otherwise.
DEFAULT_PAIRS = 4_000_000

UniformityMethod = Literal["exact", "sampled", "auto"]
MatmulPrecision = Literal["highest", "high"]
MATMUL_PRECISIONS: tuple[str, ...] = ("highest", "high")
UNIFORMITY_METHODS: tuple[str, ...] = ("exact", "sampled", "auto")


def uniformity(
    x: Any,
    t: float = 2.0,
    *,
    method: UniformityMethod = "exact",
    n_pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    tile: int | None = None,
    matmul_precision: MatmulPrecision = "highest",
) -> Estimate:
    """Uniformity of Wang & Isola (2020): ``log mean_{i<j} exp(-t ||z_i - z_j||^2)``, ``z = x / ||x||``.

    Lower is better (more uniform on the hypersphere); the minimum for n points on the sphere in high
    dimension approaches -2t (every pair orthogonal), identical points give 0.

    Definition choices (they change the number):

    * rows are L2-normalised first; pairs are all unordered pairs i < j of the *whole* set (never a mean
      of per-batch values, which is a different and batch-size-dependent quantity);
    * ``method="exact"`` (default) sums every pair with a tiled Gram kernel, ``d^2 = 2 - 2 z.z`` clamped
      at 0, blocks in the input's precision (float32 or float64), sums accumulated in float64, memory
      O(tile^2), on the input's device;
    * ``method="sampled"`` averages ``n_pairs`` uniformly drawn pairs (seeded by ``seed``); the returned
      :class:`Estimate` carries the Monte-Carlo standard error of the log (delta method);
    * ``method="auto"`` is exact up to ``EXACT_LIMIT`` (1,000,000) rows and sampled beyond;
    * ``matmul_precision="high"`` lets CUDA GEMMs use TF32 tensor cores (inputs rounded to 10-bit mantissas,
      float32 accumulation) for very large n on GPUs; the default ``"highest"`` keeps full float32. No effect
      on CPU.

    Returns an :class:`~embedgeom.metrics.estimates.Estimate` (a float with ``stderr``, ``n``, ``method``).
    For a confidence interval over texts use :func:`embedgeom.metrics.confidence_interval`.
    """
    z = l2_normalise(as_matrix(x, "x", nonzero_rows=True))
    check_positive("t", t)
    check_choice("method", method, UNIFORMITY_METHODS)
    n = z.shape[0]
    if method == "auto":
        method = "exact" if n <= EXACT_LIMIT else "sampled"
    if method == "sampled":
        check_positive("n_pairs", n_pairs, integer=True)
        mean, se = sampled_gaussian_pairs(z, float(t), n_pairs=int(n_pairs), seed=seed)
        return Estimate(math.log(mean), stderr=se / mean, n=n, method="sampled", n_pairs=int(n_pairs))
    if tile is not None:
        check_positive("tile", tile, integer=True)
    check_choice("matmul_precision", matmul_precision, MATMUL_PRECISIONS)
    with cuda_matmul_precision(matmul_precision):
        total, _ = gaussian_pair_sums(z, float(t), tile=int(tile or default_tile(z.device)))
    pairs = n * (n - 1) // 2
    return Estimate(math.log(total / pairs), stderr=0.0, n=n, method="exact", n_pairs=pairs)


def _alignment_rows(x: Any, y: Any, alpha: float) -> torch.Tensor:
    xa = as_matrix(x, "x", min_rows=1, nonzero_rows=True)
    ya = as_matrix(y, "y", min_rows=1, nonzero_rows=True)
    same_rows(xa, ya, "x", "y", same_dim=True)
    check_positive("alpha", alpha)
    ya = match_device(ya, xa)
    dtype = torch.promote_types(xa.dtype, ya.dtype)
    diff = l2_normalise(xa.to(dtype)) - l2_normalise(ya.to(dtype))
    return torch.linalg.vector_norm(diff.to(torch.float64), dim=1).pow(alpha)


def alignment(x: Any, y: Any, alpha: float = 2.0) -> float:
    """Alignment of Wang & Isola (2020): ``mean_i ||z_x_i - z_y_i||^alpha`` over row-aligned positive pairs.

    Row ``i`` of ``x`` and row ``i`` of ``y`` embed two texts that should mean the same (a paraphrase, an
    entailment, an STS pair rated similar). Rows are L2-normalised first, so the value lies in
    [0, 2^alpha]; lower is better (positives close together). ``alignment(x, x) == 0``.
    """
    return float(_alignment_rows(x, y, alpha).mean())


def _unit_sum(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z64 = z.to(torch.float64)
    return z64, z64.sum(dim=0)


def mean_cosine(x: Any) -> float:
    """Exact mean pairwise cosine similarity over pairs i != j, in O(n d).

    Uses ``sum_{i != j} z_i.z_j = ||sum_i z_i||^2 - sum_i ||z_i||^2`` on L2-normalised rows, in float64.
    The usual anisotropy measure (Ethayarajh 2019): 0 for directions spread evenly, 1 when all embeddings
    point the same way. Lower is better (less anisotropic).
    """
    z = l2_normalise(as_matrix(x, "x", nonzero_rows=True))
    n = z.shape[0]
    z64, s = _unit_sum(z)
    off = float(s @ s) - float((z64 * z64).sum())
    return off / (n * (n - 1))
