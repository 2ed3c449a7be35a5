"""Multiple-comparison control for the difference rows of one comparison.

A comparison of two models tests many differences at once (every task x pooling x layer x metric x probe), so at
95% confidence about 5% of the differences that are truly 0 still get an interval that excludes 0. Each
difference row therefore carries a two-sided p-value for "b - a = 0" from the same Student-t reference its
interval uses, and, when a correction is asked for, an adjusted p-value over the **family**: every difference row
of that one comparison that has a p-value (rows without an interval - reference-protocol point values, metrics
undefined for a set - are not tested and not counted).

* ``"none"`` (default): ``p_adjusted = p``; a row is significant when its interval excludes 0.
* ``"holm"``: Holm (1979) step-down adjusted p-values; controls the family-wise error rate (the chance of any
  false positive in the family) at ``1 - confidence``.
* ``"bh"``: Benjamini & Hochberg (1995) step-up adjusted p-values; controls the false discovery rate (the
  expected share of false positives among the significant rows) at ``1 - confidence``, for independent or
  positively dependent tests.

With a correction, ``significant`` means ``p_adjusted < 1 - confidence``; the intervals stay the per-row
(marginal) intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .options import check_choice

#: The corrections :func:`adjust_pvalues` and ``compare(correction=...)`` accept.
CORRECTIONS: tuple[str, ...] = ("none", "holm", "bh")
Correction = Literal["none", "holm", "bh"]

#: How each correction is named in tables, saved comparisons and warnings.
CORRECTION_LABELS: dict[str, str] = {
    "none": "no multiple-comparison correction",
    "holm": "Holm-adjusted (family-wise error rate)",
    "bh": "Benjamini-Hochberg-adjusted (false discovery rate)",
}

#: What the p-value of a difference row is, recorded with every comparison.
P_VALUE_DEFINITION = ("two-sided p of b - a = 0 from the Student-t reference of the row's interval: "
                      "2 * t_df.sf(|diff| / stderr) on the interval's degrees of freedom (df: jackknife replicates "
                      "- 1, or seeds - 1 for seed groups); 0 when stderr is 0 and diff is not")


def check_correction(correction: Any) -> str:
    """``correction`` when it is one of :data:`CORRECTIONS`, else one ValueError naming the valid set."""
    return check_choice(correction, "correction", CORRECTIONS)


def two_sided_p(diff: float, stderr: float, df: float) -> float:
    """Two-sided p-value of ``diff = 0`` against Student's t on ``df`` degrees of freedom (``df < 1`` is read as 1,
    as the interval does): ``2 * t.sf(|diff| / stderr, df)``. A zero standard error gives 0 for a non-zero
    difference and 1 for a zero one; a non-finite input gives NaN (no test)."""
    from scipy.stats import t as student_t

    vals = [float(v) if v is not None else math.nan for v in (diff, stderr, df)]
    diff, stderr, df = vals
    if not all(math.isfinite(v) for v in vals) or stderr < 0:
        return math.nan
    if stderr == 0.0:
        return 1.0 if diff == 0.0 else 0.0
    return float(min(1.0, 2.0 * student_t.sf(abs(diff) / stderr, df=max(df, 1.0))))


def adjust_pvalues(p: Sequence[float] | np.ndarray, correction: str) -> np.ndarray:
    """Adjusted p-values of one family. NaN entries stay NaN and are not counted in the family size ``m``.

    * ``"none"``: ``p`` unchanged.
    * ``"holm"``: with the m p-values sorted ascending, ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    * ``"bh"``: ``p~_(i) = min_{j >= i} min(1, m p_(j) / j)``.

    Ties get equal adjusted values; every adjusted value is in [p, 1]; adjusted values are in the same order as
    the p-values. ``p`` must hold values in [0, 1] (or NaN)."""
    correction = check_correction(correction)
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"p: expected a 1-D sequence of p-values, got shape {arr.shape}. Pass one family's p-values.")
    finite = np.isfinite(arr)
    if np.any(np.isinf(arr)) or np.any((arr[finite] < 0) | (arr[finite] > 1)):
        bad = arr[np.isinf(arr) | (finite & ((arr < 0) | (arr > 1)))][:3]
        raise ValueError(f"p: expected p-values in [0, 1] (NaN for rows without a test), got {bad.tolist()}.")
    out = arr.copy()
    if correction == "none" or not finite.any():
        return out
    idx = np.flatnonzero(finite)
    vals = arr[idx]
    m = vals.size
    order = np.argsort(vals, kind="mergesort")
    ranked = vals[order]
    rank = np.arange(1, m + 1, dtype=np.float64)
    if correction == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1.0) * ranked))
    else:  # bh
        adj = np.minimum.accumulate(np.minimum(1.0, m * ranked / rank)[::-1])[::-1]
    back = np.empty(m, dtype=np.float64)
    back[order] = adj
    out[idx] = back
    return out


def apply_correction(rows: list[dict[str, Any]], correction: str, confidence: float) -> dict[str, Any]:
    """Add ``p_adjusted`` and ``correction`` to every difference row of one comparison (the family) and, under a
    correction, set ``significant = p_adjusted < 1 - confidence``; rows without a p-value stay not significant.
    ``significant_unadjusted`` keeps whether the row's own interval excludes 0. Returns what the comparison
    records: the correction, its label, alpha, the family and its size, and the p-value's definition."""
    correction = check_correction(correction)
    alpha = 1.0 - float(confidence)
    adjusted = adjust_pvalues([r.get("p", math.nan) for r in rows], correction)
    for r, q in zip(rows, adjusted, strict=True):
        r["significant_unadjusted"] = bool(r.get("significant"))
        r["p_adjusted"] = float(q)
        r["correction"] = correction
        if correction != "none":
            r["significant"] = bool(np.isfinite(q) and q < alpha)
    size = int(np.isfinite(adjusted).sum())
    return {"correction": correction, "correction_label": CORRECTION_LABELS[correction], "alpha": alpha,
            "family": "every difference row of this comparison with a p-value", "family_size": size,
            "p_value": P_VALUE_DEFINITION}
