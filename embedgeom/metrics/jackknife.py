"""The jackknife and its interval: the one implementation every interval in embedgeom comes from.

* :func:`split_groups`: the seeded delete-a-group split of ``range(n)``.
* :func:`delete_group_replicates`: a statistic recomputed with each group left out.
* :func:`jackknife_stderr`: ``sqrt((R - 1) / R * sum_r (theta_r - mean theta)^2)`` over R replicates (delete-one
  replicates, or delete-a-group replicates of near-equal groups).
* :func:`t_interval`: ``value -+ t_{R - 1, (1 + confidence) / 2} * stderr``, optionally intersected with the
  statistic's range.

Used by the metrics (:mod:`embedgeom.metrics.uncertainty`), by the paired probe comparisons of
:func:`embedgeom.compare` and by the probes' own intervals (:mod:`embedgeom.probes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .estimates import Interval


def split_groups(n: int, groups: int, seed: int) -> list[np.ndarray]:
    """Seeded random split of ``range(n)`` into ``groups`` near-equal parts (each sorted)."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(g) for g in np.array_split(perm, groups)]


def delete_group_replicates(statistic: Callable[[np.ndarray], float], n: int, groups: int, seed: int
                            ) -> tuple[float, np.ndarray]:
    """``statistic(keep)`` on all rows and with each group of :func:`split_groups` left out; ``keep`` is the
    sorted index array of the rows kept. Returns (full value, replicates)."""
    full = float(statistic(np.arange(n)))
    reps = []
    for g in split_groups(n, groups, seed):
        keep = np.ones(n, dtype=bool)
        keep[g] = False
        reps.append(float(statistic(np.flatnonzero(keep))))
    return full, np.asarray(reps, dtype=np.float64)


def jackknife_stderr(replicates: np.ndarray) -> float:
    """Jackknife standard error of R replicates (R >= 2)."""
    r = np.asarray(replicates, dtype=np.float64)
    return float(math.sqrt((r.size - 1) / r.size * ((r - r.mean()) ** 2).sum()))


def t_interval(value: float, stderr: float, df: int, confidence: float,
               bounds: tuple[float, float] | None = None) -> tuple[float, float, bool]:
    """Student-t interval ``value -+ t_{df} * stderr``; with ``bounds``, intersected with them. Returns
    (low, high, clipped)."""
    from scipy.stats import t as student_t

    q = float(student_t.ppf(0.5 + confidence / 2.0, df=max(df, 1)))
    low, high = float(value - q * stderr), float(value + q * stderr)
    if bounds is not None and (low < bounds[0] or high > bounds[1]):
        return max(low, bounds[0]), min(high, bounds[1]), True
    return low, high, False


def interval(value: float, replicates: np.ndarray, n: int, confidence: float, method: str,
             bounds: tuple[float, float] | None = None) -> Interval:
    """The :class:`Interval` of a statistic from its jackknife replicates (t on R - 1 degrees of freedom); when
    ``bounds`` clip an end, or every replicate is the same number (a zero-width interval: e.g. identical
    vectors, or an integer-valued metric no deletion changes), ``method`` says so."""
    se = jackknife_stderr(replicates)
    low, high, clipped = t_interval(value, se, replicates.size - 1, confidence, bounds)
    if clipped:
        assert bounds is not None
        method += f"; clipped to the metric's range [{bounds[0]:.6g}, {bounds[1]:.6g}]"
    if replicates.size and np.ptp(replicates) == 0:
        method += f"; all {replicates.size} jackknife replicates equal (zero-width interval)"
    return Interval(float(value), se, low, high, n, float(confidence), method, int(replicates.size))
