"""The eigenspectrum every spectral metric is computed from, and the moment algebra behind it.

One piece of math: a set of rows is summarised by (n, mean, M2) with M2 = sum_i (x_i - mean)(x_i - mean)^T,
all in float64. Sets merge exactly with Chan et al.'s (1979) pairwise update, so the spectrum of a
concatenation equals the spectrum from merged summaries - the basis of the streaming accumulator and of the
delete-a-group jackknife. The functional API and :class:`~embedgeom.metrics.streaming.SpectralAccumulator`
both end in :func:`spectrum_from_moments`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Rows per chunk when a whole matrix is reduced to moments (bounds float64 temporaries to chunk x d).
CHUNK_ROWS = 16384


@dataclass(frozen=True)
class Moments:
    """n, mean and centred scatter matrix M2 of a set of rows (float64 torch tensors)."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor
    eps: float  # machine epsilon of the least precise input seen (sets the numerical-rank tolerance)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def _compute_device(device: torch.device) -> torch.device:
    # MPS has no float64; everything else computes spectra where the data already is.
    return torch.device("cpu") if device.type == "mps" else device


def moments_of(x: torch.Tensor, *, chunk: int = CHUNK_ROWS) -> Moments:
    """Exact float64 moments of a validated (n, d) matrix, reduced chunk by chunk."""
    eps = float(torch.finfo(x.dtype).eps)
    dev = _compute_device(x.device)
    acc: Moments | None = None
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk].to(device=dev, dtype=torch.float64)
        mb = xb.mean(dim=0)
        xc = xb - mb
        part = Moments(xb.shape[0], mb, xc.T @ xc, eps)
        acc = part if acc is None else merge_moments(acc, part)
    assert acc is not None
    return acc


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan et al. pairwise merge: exact moments of the union of two disjoint row sets."""
    n = a.n + b.n
    b_mean = b.mean.to(a.mean.device)
    delta = b_mean - a.mean
    mean = a.mean + delta * (b.n / n)
    m2 = a.m2 + b.m2.to(a.m2.device) + torch.outer(delta, delta) * (a.n * b.n / n)
    return Moments(n, mean, m2, max(a.eps, b.eps))


def remove_moments(total: Moments, part: Moments) -> Moments:
    """Inverse of :func:`merge_moments`: moments of ``total`` without the rows summarised by ``part``."""
    n = total.n - part.n
    if n < 1:
        raise ValueError("remove_moments: the part holds every row of the total")
    mean = (total.mean * total.n - part.mean * part.n) / n
    delta = part.mean - mean
    m2 = total.m2 - part.m2 - torch.outer(delta, delta) * (n * part.n / total.n)
    return Moments(n, mean, m2, max(total.eps, part.eps))


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues behind every spectral metric (float64, descending).

    * ``eigenvalues``: covariance eigenvalues of the centred data, ``M2 / (n - 1)``, length ``d``.
    * ``second_moment``: eigenvalues of the *uncentred* ``X^T X`` (squared singular values of X), length
      ``min(n, d)`` (RankMe uses these; None when a caller skipped them to save an eigendecomposition).

    Values at or below the numerical-rank tolerance are set to exactly 0, so rank-k data has exactly k
    non-zero eigenvalues: lambda <= lambda_max * max((max(n, d) * eps)^2, max(n, d) * 10 * eps64), where
    eps is the input dtype's (numpy's ``matrix_rank`` rule on singular values, floored by the precision of
    a float64 eigendecomposition). With n <= d at most n - 1 centred eigenvalues are non-zero: the spectral
    metrics are then properties of this sample, bounded by n - 1, not of the space.
    """

    eigenvalues: np.ndarray
    second_moment: np.ndarray | None
    n: int
    d: int
    eps: float

    @property
    def rank(self) -> int:
        """Numerical rank of the centred data (number of non-zero covariance eigenvalues)."""
        return int(np.count_nonzero(self.eigenvalues))

    @property
    def singular_values(self) -> np.ndarray:
        """Singular values of the centred data matrix, sqrt((n - 1) * eigenvalues)."""
        return np.sqrt(self.eigenvalues * (self.n - 1))


#: Relative eigenvalue floor of a float64 symmetric eigendecomposition of a Gram/scatter matrix, per
#: row-or-column: eigenvalues below lambda_max * max(n, d) * EIGH_FLOOR are rounding noise.
EIGH_FLOOR = 10 * float(np.finfo(np.float64).eps)


def _relative_tol(n: int, d: int, eps: float) -> float:
    """Eigenvalues <= lambda_max * this are numerical zeros.

    Two sources, whichever is larger: the input's own precision (singular values below
    s_max * max(n, d) * eps, numpy's matrix_rank rule, squared for eigenvalues) and the float64
    eigendecomposition of the squared-up matrix (max(n, d) * 10 * eps64).
    """
    m = max(n, d)
    return max((m * eps) ** 2, m * EIGH_FLOOR)


def _clean(ev: np.ndarray, rel_tol: float, length: int) -> np.ndarray:
    ev = np.sort(np.clip(ev, 0.0, None))[::-1]
    if ev.size and ev[0] > 0:
        ev = np.where(ev > ev[0] * rel_tol, ev, 0.0)
    out = np.zeros(length, dtype=np.float64)
    k = min(length, ev.size)
    out[:k] = ev[:k]
    return out


def spectrum_from_moments(m: Moments, *, second: bool = True) -> Spectrum:
    """Covariance and (if ``second``) second-moment eigenvalues from float64 moments."""
    if m.n < 2:
        raise ValueError(f"x: expected at least 2 rows for a covariance spectrum, got {m.n}. Pass more texts.")
    d = m.dim
    tol = _relative_tol(m.n, d, m.eps)
    m2 = (m.m2 + m.m2.T) / 2.0
    cov_ev = torch.linalg.eigvalsh(m2 / (m.n - 1)).cpu().numpy()
    sec = None
    if second:
        sec_ev = torch.linalg.eigvalsh(m2 + torch.outer(m.mean, m.mean) * m.n).cpu().numpy()
        sec = _clean(sec_ev, tol, min(m.n, d))
    return Spectrum(_clean(cov_ev, tol, d), sec, m.n, d, m.eps)


def spectrum_of(x: torch.Tensor) -> Spectrum:
    """Spectrum of a validated (n, d) matrix.

    For n >= d it reduces to d x d float64 moments (the same path as the streaming accumulator); for n < d
    it diagonalises the n x n Gram matrices of the centred and uncentred data instead (same non-zero
    eigenvalues, cheaper), padding the covariance spectrum with zeros to length d.
    """
    n, d = x.shape
    if n >= d:
        return spectrum_from_moments(moments_of(x))
    eps = float(torch.finfo(x.dtype).eps)
    x64 = x.to(device=_compute_device(x.device), dtype=torch.float64)
    xc = x64 - x64.mean(dim=0)
    cov_ev = torch.linalg.eigvalsh(xc @ xc.T).cpu().numpy() / (n - 1)
    sec_ev = torch.linalg.eigvalsh(x64 @ x64.T).cpu().numpy()
    tol = _relative_tol(n, d, eps)
    return Spectrum(_clean(cov_ev, tol, d), _clean(sec_ev, tol, n), n, d, eps)
