"""Small value types the metrics return: numbers that remember how they were obtained."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple


class Estimate(float):
    """A float that carries how it was computed.

    ``method`` is ``"exact"`` (every pair; ``stderr`` is 0 because there is no Monte-Carlo error) or
    ``"sampled"`` (``n_pairs`` pairs drawn uniformly; ``stderr`` is the Monte-Carlo standard error of the
    estimate of the exact full-set value, by the delta method on the log). Behaves as a float everywhere:
    arithmetic, comparisons, ``json.dumps``, pandas.
    """

    stderr: float
    n: int
    method: str
    n_pairs: int

    def __new__(cls, value: float, *, stderr: float, n: int, method: str, n_pairs: int) -> Estimate:
        obj = super().__new__(cls, value)
        obj.stderr = float(stderr)
        obj.n = int(n)
        obj.method = method
        obj.n_pairs = int(n_pairs)
        return obj

    def __reduce__(self):
        return (_rebuild_estimate, (float(self), self.stderr, self.n, self.method, self.n_pairs))

    def as_dict(self) -> dict:
        return {"value": float(self), "stderr": self.stderr, "n": self.n, "method": self.method,
                "n_pairs": self.n_pairs}


def _rebuild_estimate(value: float, stderr: float, n: int, method: str, n_pairs: int) -> Estimate:
    return Estimate(value, stderr=stderr, n=n, method=method, n_pairs=n_pairs)


class PowerLawFit(NamedTuple):
    """Least-squares fit of log(lambda_k) = c - alpha * log(k) over ranks ``window`` (1-based, inclusive)."""

    alpha: float
    r2: float
    intercept: float
    window: tuple[int, int]
    n_points: int


@dataclass(frozen=True)
class Interval:
    """A point estimate with its standard error and a two-sided confidence interval.

    ``value`` is the metric on all ``n`` rows; ``stderr`` and ``[low, high]`` come from ``method``
    (e.g. ``"jackknife-delete-1"`` or ``"jackknife-delete-group"`` with ``replicates`` replicates and a
    Student-t quantile on ``replicates - 1`` degrees of freedom).
    """

    value: float
    stderr: float
    low: float
    high: float
    n: int
    confidence: float
    method: str
    replicates: int

    def as_dict(self) -> dict:
        return asdict(self)

    def excludes(self, value: float = 0.0) -> bool:
        return not (self.low <= value <= self.high)


@dataclass(frozen=True)
class PairedDifference(Interval):
    """``value = metric(b) - metric(a)`` ("second minus first") on the same rows, with a paired jackknife
    interval; ``value_a`` and ``value_b`` are the two metric values.

    The same rows are deleted from both inputs in every replicate, so variation shared by the two models
    (which texts happen to be in the sample) cancels out of the interval.
    """

    value_a: float = math.nan
    value_b: float = math.nan
    metric: str = ""

    @property
    def significant(self) -> bool:
        """True when the confidence interval excludes zero."""
        return self.excludes(0.0)
