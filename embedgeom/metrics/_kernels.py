"""Exact large-n kernels: tiled Gram sums over all pairs i < j, on the input's device.

The Gaussian-potential sum behind uniformity never materialises the n x n matrix: it walks the upper
triangle in (tile x tile) blocks, so memory is O(tile^2) whatever n is, and every block is one matrix
multiplication (BLAS / cuBLAS) plus two in-place element-wise passes and a float64 reduction.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

#: Default tile edge: 512^2 float32 = 1 MiB blocks stay in a CPU's cache (fastest measured on the 2-core
#: dev machine); GPUs get 8192^2 = 256 MiB blocks to keep the tensor cores busy.
CPU_TILE = 512
GPU_TILE = 8192


def default_tile(device: torch.device) -> int:
    return CPU_TILE if device.type == "cpu" else GPU_TILE


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm (never in place; the caller's tensor is untouched)."""
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


@contextlib.contextmanager
def cuda_matmul_precision(precision: str) -> Iterator[None]:
    """``"highest"``: full float32 GEMMs; ``"high"``: TF32 tensor cores on CUDA (no effect on CPU)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "high"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def gaussian_pair_sums(
    z: torch.Tensor, t: float, *, tile: int, row_sums: bool = False
) -> tuple[float, torch.Tensor | None]:
    """Sum over pairs i < j of exp(-t ||z_i - z_j||^2) for unit-norm rows ``z``.

    Uses ||z_i - z_j||^2 = 2 - 2 z_i.z_j clamped at 0. Blocks are computed in ``z``'s dtype (float32 or
    float64); every block sum is accumulated in float64. For 4t > 80 the exponent would underflow float32
    (e^-80 ~ 1e-35), so the element-wise part then runs in float64.

    Returns the total (a Python float) and, if ``row_sums``, the float64 vector r_i = sum_{j != i} k_ij
    (needed for the exact delete-one jackknife of the U-statistic).
    """
    n = z.shape[0]
    work_dtype = z.dtype if 4.0 * t <= 80.0 else torch.float64
    zw = z.to(work_dtype)
    total = torch.zeros((), dtype=torch.float64, device=z.device)
    rows = torch.zeros(n, dtype=torch.float64, device=z.device) if row_sums else None
    two_t = 2.0 * t
    offset = torch.tensor(-two_t, dtype=work_dtype, device=z.device)
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        zi = zw[i0:i1]
        for j0 in range(i0, n, tile):
            j1 = min(j0 + tile, n)
            # -t d^2 = 2t (z_i.z_j) - 2t (one fused GEMM), clamped at 0 (d^2 >= 0), exponentiated in place.
            block = torch.addmm(offset, zi, zw[j0:j1].T, alpha=two_t)
            block.clamp_(max=0.0).exp_()
            if j0 == i0:
                diag = torch.diagonal(block)
                r = block.sum(dim=1, dtype=torch.float64) - diag.to(torch.float64)
                total += r.sum() / 2.0
                if rows is not None:
                    rows[i0:i1] += r
            else:
                r = block.sum(dim=1, dtype=torch.float64)
                total += r.sum()
                if rows is not None:
                    rows[i0:i1] += r
                    rows[j0:j1] += block.sum(dim=0, dtype=torch.float64)
    return float(total), rows


def gaussian_cross_sums(za: torch.Tensor, zb: torch.Tensor, t: float, *, tile: int
                        ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Sum over every pair (i in ``za``, j in ``zb``) of exp(-t ||z_i - z_j||^2) for unit-norm rows of two disjoint
    row sets, walked in (tile x tile) blocks as :func:`gaussian_pair_sums` does; returns the total and the float64
    per-row sums of each side."""
    work_dtype = za.dtype if 4.0 * t <= 80.0 else torch.float64
    a, b = za.to(work_dtype), zb.to(work_dtype)
    rows_a = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
    rows_b = torch.zeros(b.shape[0], dtype=torch.float64, device=a.device)
    offset = torch.tensor(-2.0 * t, dtype=work_dtype, device=a.device)
    for i0 in range(0, a.shape[0], tile):
        ai = a[i0 : i0 + tile]
        for j0 in range(0, b.shape[0], tile):
            block = torch.addmm(offset, ai, b[j0 : j0 + tile].T, alpha=2.0 * t)
            block.clamp_(max=0.0).exp_()
            rows_a[i0 : i0 + tile] += block.sum(dim=1, dtype=torch.float64)
            rows_b[j0 : j0 + tile] += block.sum(dim=0, dtype=torch.float64)
    return float(rows_a.sum()), rows_a, rows_b


def sampled_gaussian_pairs(
    z: torch.Tensor, t: float, *, n_pairs: int, seed: int, chunk: int = 1 << 20
) -> tuple[float, float]:
    """Monte-Carlo mean of exp(-t ||z_i - z_j||^2) over ``n_pairs`` pairs drawn uniformly (with replacement)
    from the n(n-1)/2 unordered pairs i != j. Returns (mean, standard error of the mean), both float64.
    """
    n = z.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    s1 = 0.0
    s2 = 0.0
    done = 0
    while done < n_pairs:
        m = min(chunk, n_pairs - done)
        i = torch.randint(n, (m,), generator=gen)
        j = torch.randint(n - 1, (m,), generator=gen)
        j = j + (j >= i).to(j.dtype)
        i, j = i.to(z.device), j.to(z.device)
        dots = (z[i].to(torch.float64) * z[j].to(torch.float64)).sum(dim=1)
        k = torch.exp(-t * (2.0 - 2.0 * dots).clamp(min=0.0))
        s1 += float(k.sum())
        s2 += float((k * k).sum())
        done += m
    mean = s1 / n_pairs
    var = max(s2 / n_pairs - mean * mean, 0.0) * n_pairs / max(n_pairs - 1, 1)
    return mean, math.sqrt(var / n_pairs)
