"""Spectral metrics: how many directions an embedding set really uses.

Every function accepts an (n, d) array/tensor *or* a precomputed :class:`Spectrum` (from
:func:`spectrum` or :meth:`SpectralAccumulator.spectrum`), so a table of spectral metrics costs one
eigendecomposition. Which spectrum each metric uses is stated in its docstring:

* covariance eigenvalues ``lambda`` of the centred data (``M2 / (n - 1)``, float64);
* singular values ``s = sqrt((n - 1) lambda)`` of the centred data;
* singular values of the *uncentred* data (RankMe only).

With n <= d the centred data has at most n - 1 non-zero eigenvalues; the metrics stay defined but are
bounded by n - 1 and describe the sample rather than the space (always report n).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validate import as_matrix
from .estimates import PowerLawFit
from .moments import Spectrum, spectrum_of

#: RankMe's epsilon, added to each normalised singular value (Garrido et al. 2023).
RANKME_EPS = 1e-7


def spectrum(x: Any) -> Spectrum:
    """Validate ``x`` and return its :class:`Spectrum` (covariance and second-moment eigenvalues)."""
    if isinstance(x, Spectrum):
        return x
    return spectrum_of(as_matrix(x, "x"))


def _nonzero(sp: Spectrum) -> np.ndarray:
    ev = sp.eigenvalues[sp.eigenvalues > 0]
    if ev.size == 0:
        raise ValueError(f"x: expected rows that vary, got {sp.n} rows with zero covariance (all identical). "
                         "Check the encoder: every text got the same embedding.")
    return ev


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def eigenspectrum(x: Any) -> np.ndarray:
    """Covariance eigenvalues of the centred data, descending, float64 numpy array of length d.

    Covariance normalised by n - 1. Values below the numerical-rank tolerance are exactly 0 (see
    :class:`Spectrum`); with n <= d at most n - 1 are non-zero.
    """
    return spectrum(x).eigenvalues.copy()


def effective_rank(x: Any) -> float:
    """Effective rank of Roy & Vetterli (2007): ``exp(H(p))``, ``p = s / sum(s)``, ``s`` the singular values
    of the *centred* data, H the Shannon entropy in nats. Between 1 and min(n - 1, d); higher = more
    directions used. Isotropic Gaussian data gives close to d (for n >> d); rank-k data gives at most k.
    """
    s = np.sqrt(_nonzero(spectrum(x)))
    return math.exp(_entropy(s / s.sum()))


def rankme(x: Any) -> float:
    """RankMe of Garrido et al. (2023): ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / ||s||_1 + 1e-7``, over the
    min(n, d) singular values ``s`` of the *uncentred* data. Higher = more directions used. Differs from
    :func:`effective_rank` only by not centring (a common mean direction counts as a direction) and epsilon.
    """
    sp = spectrum(x)
    _nonzero(sp)
    if sp.second_moment is None:
        raise ValueError("x: expected a Spectrum with second-moment eigenvalues for RankMe, got one computed "
                         "with second=False. Recompute it with second=True.")
    s = np.sqrt(sp.second_moment)
    p = s / s.sum() + RANKME_EPS
    return math.exp(float(-(p * np.log(p)).sum()))


def stable_rank(x: Any) -> float:
    """Stable rank ``||X_c||_F^2 / ||X_c||_2^2 = sum(lambda) / max(lambda)`` of the centred data (covariance
    eigenvalues). Between 1 and the rank; insensitive to small eigenvalues. Higher = flatter top of the
    spectrum.
    """
    ev = _nonzero(spectrum(x))
    return float(ev.sum() / ev[0])


def participation_ratio(x: Any) -> float:
    """Participation ratio ``(sum lambda)^2 / sum(lambda^2)`` of the covariance eigenvalues (Gao et al.
    2017's dimensionality). Between 1 and the rank; higher = variance spread over more directions.
    """
    ev = _nonzero(spectrum(x))
    return float(ev.sum() ** 2 / (ev * ev).sum())


def spectral_entropy(x: Any, *, normalize: bool = False) -> float:
    """Shannon entropy (nats) of the normalised covariance eigenvalues ``lambda / sum(lambda)``.

    With ``normalize=True`` it is divided by log(d), giving a value in [0, 1] comparable across sample
    sizes of the same model. ``exp`` of the unnormalised value is the eigenvalue-based effective rank.
    Higher = variance spread more evenly.
    """
    sp = spectrum(x)
    ev = _nonzero(sp)
    h = _entropy(ev / ev.sum())
    if normalize:
        return h / math.log(sp.d) if sp.d > 1 else 0.0
    return h


def rank_at_variance(x: Any, q: float = 0.9) -> int:
    """Smallest k such that the top-k covariance eigenvalues explain at least a fraction ``q`` of the total
    variance (PCA components needed for ``q`` variance). Higher = variance spread over more directions.
    """
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0.0 < q <= 1.0:
        raise ValueError(f"q: expected a fraction of variance in (0, 1], got {q!r}. Pass e.g. q=0.9.")
    ev = _nonzero(spectrum(x))
    cum = np.cumsum(ev) / ev.sum()
    k = int(np.searchsorted(cum, q - 1e-12, side="left")) + 1
    return min(k, ev.size)


def default_alpha_window(rank: int) -> tuple[int, int]:
    """Ranks 2 .. max(4, rank // 2): skip the first eigenvalue (a common-direction outlier in most text
    embeddings) and the upper half of the non-zero spectrum, where every finite-sample covariance spectrum
    falls off a cliff that is not a property of the representation."""
    return 2, min(rank, max(4, rank // 2))


def alpha_req(x: Any, *, window: tuple[int, int | None] | None = None) -> PowerLawFit:
    """Power-law exponent of the eigenspectrum (alpha-ReQ, Agrawal et al. 2022): weighted least-squares fit of
    ``log lambda_k = c - alpha log k`` over the ranks ``window = (lo, hi)`` (1-based, inclusive).

    * Window: by default :func:`default_alpha_window` (ranks 2 .. half the numerical rank); ``(lo, None)`` runs to
      the numerical rank. ``hi`` is always clipped to the numerical rank: the fit never uses zero eigenvalues.
    * Weights: each rank k has weight 1/k, i.e. equal weight per decade of rank (an unweighted fit is dominated
      by the many high ranks in the tail).
    * Returns ``PowerLawFit(alpha, r2, intercept, window, n_points)`` with the weighted R^2.

    Larger alpha = faster decay (fewer effective directions); Agrawal et al. associate alpha near 1 with good
    representations. Needs at least 3 ranks in the window.
    """
    if window is not None and (not isinstance(window, (tuple, list)) or len(window) != 2
                               or not isinstance(window[0], int)
                               or (window[1] is not None and not isinstance(window[1], int))):
        raise ValueError(f"window: expected None or (lo, hi) 1-based ranks with hi an int or None, got {window!r}. "
                         "Pass e.g. window=(2, 100).")
    ev = _nonzero(spectrum(x))
    if window is None:
        lo, hi = default_alpha_window(ev.size)
    else:
        lo = max(1, window[0])
        hi = ev.size if window[1] is None else min(window[1], ev.size)
    if hi - lo + 1 < 3:
        raise ValueError(f"window: expected at least 3 non-zero eigenvalues between ranks {lo} and {hi}, got "
                         f"{max(hi - lo + 1, 0)} (the data has {ev.size} non-zero eigenvalues). Widen the window or "
                         "pass more texts.")
    k = np.arange(lo, hi + 1, dtype=np.float64)
    lx, ly, w = np.log(k), np.log(ev[lo - 1 : hi]), 1.0 / k
    slope, intercept = np.polyfit(lx, ly, 1, w=np.sqrt(w))
    resid = ly - (slope * lx + intercept)
    mean = float((w * ly).sum() / w.sum())
    ss_tot = float((w * (ly - mean) ** 2).sum())
    r2 = 1.0 - float((w * resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(float(-slope), r2, float(intercept), (lo, hi), int(k.size))


def isoscore(x: Any) -> float:
    """IsoScore of Rudman et al. (2022): how uniformly variance is spread over all d dimensions, in [0, 1].

    Computed from the d covariance eigenvalues (the variances along principal directions): normalise the
    eigenvalue vector to norm sqrt(d), isotropy defect ``delta = ||v - 1|| / sqrt(2 (d - sqrt d))``,
    ``k = (d - delta^2 (d - sqrt d))^2 / d^2``, score ``(d k - 1) / (d - 1)``. 1 = isotropic, 0 = a single
    direction. Agrees with the reference implementation (PyPI ``isoscore``). Higher = more isotropic.
    """
    sp = spectrum(x)
    _nonzero(sp)
    d = float(sp.d)
    if sp.d < 2:
        raise ValueError("x: expected at least 2 dimensions for IsoScore, got 1. Pass d >= 2 embeddings.")
    ev = sp.eigenvalues
    v = ev * math.sqrt(d) / np.linalg.norm(ev)
    delta = np.linalg.norm(v - 1.0) / math.sqrt(2.0 * (d - math.sqrt(d)))
    k = (d - delta**2 * (d - math.sqrt(d))) ** 2 / d**2
    return float((d * k - 1.0) / (d - 1.0))
