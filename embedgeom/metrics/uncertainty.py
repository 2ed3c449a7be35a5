"""Confidence intervals over texts: the jackknife, never bootstrap-with-replacement.

Bootstrap resampling duplicates rows; a duplicated embedding sits at distance 0 from itself, which inflates
uniformity's pair potential and deflates every rank metric, so bootstrap intervals of geometry metrics are
biased. We use the jackknife, which only ever deletes rows:

* ``"pair"`` metrics (uniformity, mean cosine) are U-statistics over pairs: the *exact* delete-one jackknife
  comes from per-row kernel sums computed in the same tiled pass (O(n) extra memory, no recomputation);
* ``"rowmean"`` metrics (alignment) are means over rows: exact delete-one jackknife;
* ``"spectral"`` metrics: delete-a-group jackknife with G groups (default 20, seeded random split); each
  leave-a-group-out spectrum comes from merged float64 moments (no pass over the data per replicate);
* anything else (cross-model metrics, custom callables): delete-a-group jackknife by recomputation.

Variance ``(R - 1) / R * sum_r (theta_r - mean theta)^2`` over the R replicates; interval
``value +- t_{R-1, (1 + confidence) / 2} * stderr`` around the full-sample value. The interval describes
which texts were sampled at this n; for rank metrics, which grow with n, compare only equal n. For
integer-valued metrics (rank_at_variance) the jackknife is coarse. Every result records n, method and R.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._kernels import default_tile, gaussian_pair_sums, l2_normalise
from ._validate import as_matrix, collapse_checked, match_device, same_rows, warn_if_collapsed
from .distance import _alignment_rows
from .estimates import Interval, PairedDifference
from .jackknife import interval, split_groups
from .moments import Moments, Spectrum, merge_moments, moments_of, spectrum_from_moments, spectrum_of
from .registry import MetricInfo, get_metric

DEFAULT_GROUPS = 20


def _uses_groups(metric: Any) -> bool:
    """Delete-one families (pair, rowmean) ignore ``groups``."""
    if callable(metric) and not isinstance(metric, (str, MetricInfo)):
        return True
    return get_metric(metric).family not in ("pair", "rowmean")


def _check_options(confidence: float, groups: int, n: int, uses_groups: bool = True) -> None:
    if not isinstance(confidence, (int, float)) or isinstance(confidence, bool) or not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence!r}. Pass e.g. 0.95.")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 2:
        raise ValueError(f"groups: expected an integer >= 2, got {groups!r}. Pass e.g. groups=20.")
    if uses_groups and groups > n:
        default = " (the default)" if groups == DEFAULT_GROUPS else ""
        raise ValueError(f"groups: expected at most n = {n} groups (one row each), got {groups}{default}. "
                         f"Pass groups={n} or fewer, or more texts.")


def _checked(x: Any, name: str) -> tuple[torch.Tensor, str | None]:
    """``x`` validated (at least one row) and checked once for collapse (a warning); with the short collapse note
    for the interval's method, or None."""
    mat = x if isinstance(x, torch.Tensor) else as_matrix(x, name, min_rows=1, check_collapse=False)
    reason = warn_if_collapsed(mat, name)
    return mat, None if reason is None else "collapsed input: " + reason.split(", so ")[0]


def _noted(iv: Interval, *notes: str | None) -> Interval:
    """``iv`` with the collapse notes of its inputs added to its method (the interval describes rounding)."""
    extra = "; ".join(dict.fromkeys(n for n in notes if n))
    if not extra:
        return iv
    return type(iv)(**{**iv.as_dict(), "method": f"{iv.method}; {extra}"})


# --- replicate generators: (full value, replicate values, method name) ------------------------------

def _pair_replicates(info: MetricInfo, x: torch.Tensor, opts: dict) -> tuple[float, np.ndarray, str]:
    z = l2_normalise(as_matrix(x, "x", nonzero_rows=True))
    n = z.shape[0]
    if n < 3:
        raise ValueError(f"x: expected at least 3 rows for a delete-one jackknife of a pair metric, got {n}.")
    if info.pair_kernel == "gaussian":
        t = float(opts.get("t", 2.0))
        total, rows = gaussian_pair_sums(z, t, tile=int(opts.get("tile") or default_tile(z.device)),
                                         row_sums=True)
        assert rows is not None
        full = math.log(total / (n * (n - 1) / 2))
        reps = np.log((total - rows.cpu().numpy()) / ((n - 1) * (n - 2) / 2))
    elif info.pair_kernel == "cosine":
        z64 = z.to(torch.float64)
        s = z64.sum(dim=0)
        rows_t = z64 @ s - (z64 * z64).sum(dim=1)
        total = float(rows_t.sum()) / 2.0
        full = total / (n * (n - 1) / 2)
        reps = (total - rows_t.cpu().numpy()) / ((n - 1) * (n - 2) / 2)
    else:  # pragma: no cover - registry and this module change together
        raise ValueError(f"metric: no exact pair jackknife for {info.name}")
    return full, reps, "jackknife-delete-1 (exact, U-statistic row sums)"


def _rowmean_replicates(info: MetricInfo, x: Any, y: Any, opts: dict) -> tuple[float, np.ndarray, str]:
    a = _alignment_rows(x, y, float(opts.get("alpha", 2.0))).cpu().numpy()
    n = a.size
    if n < 2:
        raise ValueError(f"x: expected at least 2 positive pairs for an interval, got {n}.")
    total = a.sum()
    return float(a.mean()), (total - a) / (n - 1), "jackknife-delete-1 (exact, row mean)"


def _leave_one_out_moments(parts: list[Moments]) -> tuple[Moments, list[Moments]]:
    g = len(parts)
    prefix: list[Moments | None] = [None] * (g + 1)
    suffix: list[Moments | None] = [None] * (g + 1)
    for i in range(g):
        prefix[i + 1] = parts[i] if prefix[i] is None else merge_moments(prefix[i], parts[i])
    for i in range(g - 1, -1, -1):
        suffix[i] = parts[i] if suffix[i + 1] is None else merge_moments(parts[i], suffix[i + 1])
    outs = []
    for i in range(g):
        a, b = prefix[i], suffix[i + 1]
        outs.append(b if a is None else a if b is None else merge_moments(a, b))  # type: ignore[arg-type]
    return prefix[g], outs  # type: ignore[return-value]


def _loo_spectra(x: torch.Tensor, groups: list[np.ndarray], need_second: bool) -> tuple[Spectrum, list[Spectrum]]:
    """Full-sample and leave-one-group-out spectra. With at least d rows left per replicate they come from
    merged d x d moments (no pass over the data per replicate); with fewer rows than dimensions, from the
    smaller n x n Gram matrices of the kept rows (same non-zero eigenvalues, less work)."""
    n, d = x.shape
    if n - max(len(g) for g in groups) >= d:
        parts = [moments_of(x[torch.as_tensor(g, device=x.device)]) for g in groups]
        total, loo = _leave_one_out_moments(parts)
        return (spectrum_from_moments(total, second=need_second),
                [spectrum_from_moments(m, second=need_second) for m in loo])
    reps = []
    for g in groups:
        keep = np.ones(n, dtype=bool)
        keep[g] = False
        reps.append(spectrum_of(x[torch.as_tensor(np.nonzero(keep)[0], device=x.device)]))
    return spectrum_of(x), reps


def _spectral_replicates(info: MetricInfo, x: torch.Tensor, opts: dict, groups: list[np.ndarray]
                         ) -> tuple[float, np.ndarray, str]:
    full_sp, loo_sp = _loo_spectra(x, groups, info.name == "rankme")
    full = info(full_sp, **opts)  # first: a set the metric is undefined on is reported with all its rows
    return full, np.array([info(sp, **opts) for sp in loo_sp]), f"jackknife-delete-group ({len(groups)} groups)"


def _generic_replicates(fn: Callable[..., float], arrays: list[torch.Tensor], groups: list[np.ndarray]
                        ) -> tuple[float, np.ndarray, str]:
    n = arrays[0].shape[0]
    full = float(fn(*arrays))
    reps = []
    for g in groups:
        keep = np.ones(n, dtype=bool)
        keep[g] = False
        idx = torch.as_tensor(np.nonzero(keep)[0], device=arrays[0].device)
        reps.append(float(fn(*[a[match_device(idx, a)] for a in arrays])))
    return full, np.asarray(reps), f"jackknife-delete-group ({len(groups)} groups, recomputed)"


def _replicates(metric: Any, arrays: list[Any], groups: int, seed: int, opts: dict
                ) -> tuple[float, np.ndarray, str]:
    if callable(metric) and not isinstance(metric, (str, MetricInfo)):
        mats = [as_matrix(a, f"x{i}") for i, a in enumerate(arrays)]
        return _generic_replicates(lambda *a: float(metric(*a, **opts)), mats,
                                   split_groups(mats[0].shape[0], groups, seed))
    info = get_metric(metric)
    want = 1 if info.kind == "set" else 2
    if len(arrays) != want:
        raise ValueError(f"{info.name}: expected {want} embedding array(s) ({info.kind} metric), got "
                         f"{len(arrays)}.")
    if info.family == "rowmean":
        return _rowmean_replicates(info, arrays[0], arrays[1], {**info.kwargs, **opts})
    mats = [as_matrix(a, name) for a, name in zip(arrays, ("x", "y"), strict=False)]
    if len(mats) == 2:
        same_rows(mats[0], mats[1], "x", "y", same_dim=False)
    if info.family == "pair":
        return _pair_replicates(info, mats[0], {**info.kwargs, **opts})
    split = split_groups(mats[0].shape[0], groups, seed)
    if info.family == "spectral":
        return _spectral_replicates(info, mats[0], opts, split)
    return _generic_replicates(lambda *a: info(*a, **opts), mats, split)


def _replicates_many(names: list[str], x: Any, groups: int, seed: int, options: dict[str, dict]
                     ) -> dict[str, tuple[float, np.ndarray, str]]:
    """Replicates for several single-set metrics of one array, sharing the work of the spectral family
    (group moments and leave-one-group-out spectra are computed once for all spectral metrics)."""
    infos = [get_metric(nm) for nm in names]
    for info in infos:
        if info.kind != "set":
            raise ValueError(f"metrics: expected single-set metrics, got {info.name!r} ({info.kind}).")
    mat = as_matrix(x, "x")
    out: dict[str, tuple[float, np.ndarray, str]] = {}
    spectral = [i for i in infos if i.family == "spectral"]
    if spectral:
        split = split_groups(mat.shape[0], groups, seed)
        full_sp, loo_sp = _loo_spectra(mat, split, any(i.name == "rankme" for i in spectral))
        method = f"jackknife-delete-group ({len(split)} groups)"
        for info in spectral:
            opts = options.get(info.name, {})
            out[info.name] = (info(full_sp, **opts), np.array([info(sp, **opts) for sp in loo_sp]), method)
    for info in infos:
        if info.family != "spectral":
            out[info.name] = _replicates(info, [mat], groups, seed, options.get(info.name, {}))
    return out


def confidence_intervals(
    names: list[str],
    x: Any,
    *,
    confidence: float = 0.95,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    options: dict[str, dict] | None = None,
) -> dict[str, Interval]:
    """:func:`confidence_interval` for several single-set metrics of ``x`` at once (same numbers; the
    spectral metrics share one set of group moments and leave-one-group-out spectra)."""
    mat = as_matrix(x, "x", min_rows=1, check_collapse=False)
    n = mat.shape[0]
    _check_options(confidence, groups, n, any(_uses_groups(nm) for nm in names))
    mat, note = _checked(mat, "x")
    with collapse_checked():
        reps = _replicates_many(list(names), mat, groups, seed, options or {})
    return {nm: _noted(interval(v, r, n, confidence, m, _bounds(nm, mat, (options or {}).get(nm, {}))), note)
            for nm, (v, r, m) in reps.items()}


def paired_differences(
    names: list[str],
    x_a: Any,
    x_b: Any,
    *,
    confidence: float = 0.95,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    options: dict[str, dict] | None = None,
) -> dict[str, PairedDifference]:
    """:func:`paired_difference` (``b - a``) for several single-set metrics at once (shared spectral work)."""
    xa = as_matrix(x_a, "x_a", min_rows=1, check_collapse=False)
    xb = as_matrix(x_b, "x_b", min_rows=1, check_collapse=False)
    same_rows(xa, xb, "x_a", "x_b", same_dim=False)
    n = xa.shape[0]
    _check_options(confidence, groups, n, any(_uses_groups(nm) for nm in names))
    (xa, note_a), (xb, note_b) = _checked(xa, "x_a"), _checked(xb, "x_b")
    with collapse_checked():
        ra = _replicates_many(list(names), xa, groups, seed, options or {})
        rb = _replicates_many(list(names), xb, groups, seed, options or {})
    out = {}
    for nm in names:
        (va, reps_a, method), (vb, reps_b, _) = ra[nm], rb[nm]
        base = _noted(interval(vb - va, reps_b - reps_a, n, confidence, "paired " + method), note_a, note_b)
        out[nm] = PairedDifference(**base.as_dict(), value_a=float(va), value_b=float(vb), metric=nm)
    return out


def _bounds(metric: Any, x: Any, options: dict) -> tuple[float, float] | None:
    """The range of a registered metric on ``x`` (None for callables and metrics without a known range)."""
    if not isinstance(metric, (str, MetricInfo)):
        return None
    info = get_metric(metric)
    if info.bounds is None:
        return None
    n, d = (int(v) for v in x.shape)
    return info.bounds(n, d, {**info.kwargs, **options})


def confidence_interval(
    metric: str | MetricInfo | Callable[..., float],
    x: Any,
    y: Any = None,
    *,
    confidence: float = 0.95,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    **options: Any,
) -> Interval:
    """Point estimate, jackknife standard error and confidence interval of one metric over texts.

    The interval is the Student-t interval of the jackknife replicates, intersected with the metric's range
    (``REGISTRY[name].bounds``: e.g. effective rank in [1, min(n - 1, d)], uniformity in [-4t, 0], cosines in
    [-1, 1]); when that clips an end, ``method`` says so. The standard error is not changed.

    ``metric`` is a REGISTRY name (``"uniformity"``, ``"effective_rank"``, ...), a MetricInfo, or any
    callable taking the arrays (then a delete-a-group jackknife by recomputation). ``y`` is the second
    array for paired (alignment) and cross metrics. ``options`` override the metric's registered options
    (e.g. ``t=4.0``). ``groups`` and ``seed`` set the delete-a-group split (recorded in ``method``).
    """
    mat = as_matrix(x, "x", min_rows=1, check_collapse=False)
    n = mat.shape[0]
    _check_options(confidence, groups, n, _uses_groups(metric))
    mat, note = _checked(mat, "x")
    note_y = None if y is None else _checked(as_matrix(y, "y", min_rows=1, check_collapse=False), "y")[1]
    with collapse_checked():
        value, reps, method = _replicates(metric, [x] if y is None else [x, y], groups, seed, options)
    return _noted(interval(value, reps, n, confidence, method, _bounds(metric, mat, options)), note, note_y)


def paired_difference(
    metric: str | MetricInfo | Callable[..., float],
    x_a: Any,
    x_b: Any,
    *,
    y_a: Any = None,
    y_b: Any = None,
    confidence: float = 0.95,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    **options: Any,
) -> PairedDifference:
    """Difference ``metric(b) - metric(a)`` ("second minus first", as everywhere in embedgeom) between two models
    on the same texts, with a paired CI.

    Row i of ``x_a`` and ``x_b`` must embed the same text (dimensions may differ). Each jackknife replicate
    deletes the same rows from both, and the interval is that of the replicate differences, so variation
    due to which texts were sampled cancels. For alignment pass the positives ``y_a``, ``y_b`` too.
    ``significant`` is True when the interval excludes 0.
    """
    info = None if callable(metric) and not isinstance(metric, (str, MetricInfo)) else get_metric(metric)
    if info is not None and info.kind == "cross":
        raise ValueError(f"metric: expected a single-model metric, got the cross-model metric {info.name!r}. "
                         "Call it directly on the two models' embeddings.")
    xa = as_matrix(x_a, "x_a", min_rows=1, check_collapse=False)
    xb = as_matrix(x_b, "x_b", min_rows=1, check_collapse=False)
    same_rows(xa, xb, "x_a", "x_b", same_dim=False)
    if info is not None and info.kind == "paired" and (y_a is None or y_b is None):
        raise ValueError(f"y_a, y_b: expected the positives for the paired metric {info.name!r}, got None. "
                         "Pass y_a= and y_b= (row i of y is the positive of row i of x).")
    n = xa.shape[0]
    _check_options(confidence, groups, n, _uses_groups(metric))
    (xa, note_a), (xb, note_b) = _checked(xa, "x_a"), _checked(xb, "x_b")
    arr_a = [xa] if y_a is None else [xa, y_a]
    arr_b = [xb] if y_b is None else [xb, y_b]
    with collapse_checked():
        va, ra, method = _replicates(metric if info is None else info, arr_a, groups, seed, options)
        vb, rb, _ = _replicates(metric if info is None else info, arr_b, groups, seed, options)
    base = _noted(interval(vb - va, rb - ra, n, confidence, "paired " + method), note_a, note_b)
    name = info.name if info is not None else getattr(metric, "__name__", "custom")
    return PairedDifference(**base.as_dict(), value_a=float(va), value_b=float(vb), metric=name)
