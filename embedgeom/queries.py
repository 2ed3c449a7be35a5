"""Questions asked of results: what an analysis or comparison holds, which row answers a request, and how its
intervals are labelled. :mod:`embedgeom.figures` (drawing) and :mod:`embedgeom.report` (assembly) both ask
them here; nothing in this module draws, writes or imports matplotlib.

* **What is present**: :func:`tasks_of`, :func:`poolings_of`, :func:`layers_of`, :func:`metrics_of` (first-seen
  order), :func:`num_layers`; requests checked against them (:func:`check_task`, :func:`select_poolings`,
  :func:`check_layer`, :func:`check_metric`) raise one ``ValueError`` listing what is present.
* **Layers**: :func:`resolve_layer` (``None`` = the last measured, negative counts from the model's last layer).
* **Rows**: :func:`metric_row`, :func:`probe_row`, :func:`layer_series`, :func:`spectrum_of`,
  :func:`histogram_of`; interval arithmetic of one row (:func:`half_width`, :func:`bounds`).
* **Trainer runs**: :func:`trajectory_of`, :func:`group_runs`, :func:`runs_of`, :func:`step_of`.
* **Comparisons**: :func:`comparison_tasks`, :func:`comparison_poolings`, :func:`comparison_label`,
  :func:`pooling_key`, :func:`layer_key`, :func:`has_intervals`, :func:`excludes_zero`, :func:`is_significant`,
  :func:`correction_of` (the multiple-comparison correction, alpha and family size).
* **Confidence**: :func:`confidence_of` reads the level a result's intervals were computed at
  (``options['confidence']``), :func:`confidence_levels` groups results by it and :func:`ci_label` says it
  ("90% CI"), so no label assumes 95%.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .results import AnalysisResult, ComparisonResult, array_key


class IncomparableWarning(UserWarning):
    """Results put side by side (compared, tabulated or drawn together) differ in the number of texts n or the
    embedding dimension d: the rank and spectral metrics (and alpha-ReQ's fit window) move with n and d, so their
    differences partly measure n and d. The message names the task, each side's n and d, and what is and is not
    comparable. (Public as ``embedgeom.comparison.IncomparableWarning`` and, the same class,
    ``embedgeom.figures.IncomparableResultsWarning``.)"""

#: Normal quantile of a two-sided 95% interval: used only for rows that carry a standard error and no interval
#: (probe scores), and labelled "±1.96 s.e." wherever it is drawn or printed.
Z95 = 1.96
#: Probe scores preferred as a task's headline probe, in order; otherwise the first score present.
MAIN_PROBES: tuple[tuple[str, str], ...] = (("linear", "accuracy"), ("cosine", "spearman"), ("semantic", "accuracy"),
                                            ("semantic", "spearman"), ("ridge", "spearman"), ("token", "accuracy"))


# --- numbers and intervals of one row ---------------------------------------------------------------------------

def is_finite(v: Any) -> bool:
    """Whether ``v`` is a finite real number (booleans are not)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def half_width(row: Mapping[str, Any]) -> float:
    """The larger distance from a row's value to its interval's ends; ``Z95`` standard errors when it has no
    interval but a standard error; 0 when it has neither (reference protocol)."""
    lo, hi, v = row.get("low"), row.get("high"), row.get("value")
    if lo is None or hi is None or not (is_finite(lo) and is_finite(hi)):
        se = row.get("stderr")
        return Z95 * se if is_finite(se) else 0.0
    return max(v - lo, hi - v)


def bounds(row: Mapping[str, Any]) -> tuple[float, float]:
    """A row's interval (low, high); value ± :func:`half_width` when it has none."""
    v = float(row["value"])
    hw = half_width(row)
    lo, hi = row.get("low"), row.get("high")
    if is_finite(lo) and is_finite(hi):
        return float(lo), float(hi)
    return v - hw, v + hw


def excludes_zero(row: Mapping[str, Any]) -> bool:
    """Whether a difference row's interval excludes 0 (its ``significant`` flag when it has no interval)."""
    lo, hi = row.get("low"), row.get("high")
    if is_finite(lo) and is_finite(hi):
        return not (float(lo) <= 0.0 <= float(hi))
    return bool(row.get("significant"))


# --- confidence ---------------------------------------------------------------------------------------------------

def is_reference_protocol(res: AnalysisResult | ComparisonResult) -> bool:
    """Whether ``res`` was made with the reference study's protocol (point values, no intervals)."""
    return res.options.get("protocol") == "paper"


def _level(c: Any) -> float | None:
    return float(c) if is_finite(c) and 0 < float(c) < 1 else None


def confidence_of(res: AnalysisResult | ComparisonResult) -> float | None:
    """The confidence level ``res``'s intervals were computed at: ``options['confidence']``; for an analysis
    without it, the one level its metric rows record; None when unknown."""
    c = _level(res.options.get("confidence"))
    if c is not None or not isinstance(res, AnalysisResult):
        return c
    levels = {_level(r.get("confidence")) for r in res.metrics if is_finite(r.get("low"))} - {None}
    return levels.pop() if len(levels) == 1 else None


def percent(confidence: float) -> str:
    """0.95 -> '95%', 0.9 -> '90%', 0.975 -> '97.5%'."""
    return f"{confidence * 100:.4g}%"


def confidence_levels(results: Sequence[AnalysisResult | ComparisonResult]) -> dict[str, list[str]]:
    """{'90%': [names of the results whose intervals are at 90%], ...} in first-seen order; results without a
    recorded level and reference-protocol results (no intervals) are left out."""
    levels: dict[str, list[str]] = {}
    for r in results:
        if is_reference_protocol(r):
            continue
        c = confidence_of(r)
        if c is not None:
            name = r.name if isinstance(r, AnalysisResult) else f"{r.b} − {r.a}"
            names = levels.setdefault(percent(c), [])
            if name not in names:
                names.append(name)
    return levels


def ci_label(results: Sequence[AnalysisResult | ComparisonResult]) -> str:
    """What the intervals of ``results`` are: '90% CI' when they share one level; 'CIs: 90% for a, 95% for b'
    when they differ; 'CI' when no level is recorded. Reference-protocol results (no intervals) are left out."""
    levels = confidence_levels(results)
    if not levels:
        return "CI"
    if len(levels) == 1:
        return f"{next(iter(levels))} CI"
    return "CIs: " + ", ".join(f"{lvl} for {', '.join(names)}" for lvl, names in levels.items())


# --- what the results hold --------------------------------------------------------------------------------------

def as_results(results: Any, what: str = "results") -> list[AnalysisResult]:
    """``results`` (one AnalysisResult or a sequence of them) as a non-empty list, or one clear ValueError."""
    if isinstance(results, AnalysisResult):
        return [results]
    if isinstance(results, (str, bytes, ComparisonResult)) or not isinstance(results, Sequence):
        raise ValueError(f"{what}: expected an AnalysisResult or a list of them, got {type(results).__name__}.")
    out = list(results)
    if not out:
        raise ValueError(f"{what}: expected at least one analysis result, got none.")
    bad = [type(r).__name__ for r in out if not isinstance(r, AnalysisResult)]
    if bad:
        raise ValueError(f"{what}: expected AnalysisResult items, got {', '.join(dict.fromkeys(bad))}.")
    return out


def tasks_of(results: Sequence[AnalysisResult]) -> list[str]:
    """Tasks present in any result, in first-seen order."""
    seen: dict[str, None] = {}
    for r in results:
        for t in r.tasks:
            seen.setdefault(t)
        for t, _, _ in r.measured():
            seen.setdefault(t)
        for p in r.probes:
            seen.setdefault(p["task"])
    return list(seen)


def poolings_of(results: Sequence[AnalysisResult], task: str) -> list[str]:
    """Poolings measured for ``task`` in any result, in first-seen order."""
    seen: dict[str, None] = {}
    for r in results:
        for t, p, _ in r.measured():
            if t == task:
                seen.setdefault(p)
        for row in r.probes:
            if row["task"] == task:
                seen.setdefault(row["pooling"])
    return list(seen)


def layers_of(res: AnalysisResult, task: str, pooling: str | None = None) -> list[int]:
    """Layers ``res`` measured for ``task`` (and ``pooling``), ascending."""
    return sorted({int(r["layer"]) for r in itertools.chain(res.metrics, res.probes)
                   if r["task"] == task and (pooling is None or r["pooling"] == pooling)})


def metrics_of(results: Sequence[AnalysisResult], task: str, pooling: str | None = None) -> list[str]:
    """Metric names with a row for ``task`` (and ``pooling``) in any result, in first-seen order."""
    return list(dict.fromkeys(r["metric"] for res in results for r in res.metrics
                              if r["task"] == task and (pooling is None or r["pooling"] == pooling)))


def num_layers(res: AnalysisResult) -> int:
    """The model's last hidden-layer index (0 = embedding output): its card's ``num_layers``, else the deepest
    layer measured."""
    n = res.checkpoint.get("num_layers")
    if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0:
        return int(n)
    return max((int(r["layer"]) for r in itertools.chain(res.metrics, res.probes)), default=0)


def resolve_layer(res: AnalysisResult, task: str, layer: int | None, pooling: str | None = None) -> int | None:
    """The layer of ``res`` to draw for ``task``: ``None`` -> the last one measured; negative -> counted from the
    model's last layer (-1 = last); None when that layer was not measured."""
    present = layers_of(res, task, pooling)
    if not present:
        return None
    if layer is None:
        return present[-1]
    lay = layer + num_layers(res) + 1 if layer < 0 else layer
    return lay if lay in present else None


def alignment_metric(results: Sequence[AnalysisResult], task: str) -> str | None:
    """The alignment the results hold for ``task``: 'alignment' (positive pairs), else the reference protocol's
    'alignment_class_conditional', else None."""
    present = metrics_of(results, task)
    for m in ("alignment", "alignment_class_conditional"):
        if m in present:
            return m
    return None


# --- requests checked against what is present --------------------------------------------------------------------

def check_task(results: Sequence[AnalysisResult], task: Any) -> str:
    present = tasks_of(results)
    if task not in present:
        raise ValueError(f"task: expected one of {present}, got {task!r}.")
    return task


def select_poolings(results: Sequence[AnalysisResult], task: str, pooling: str | Sequence[str] | None) -> list[str]:
    """``pooling`` validated against what ``task`` holds; ``None`` -> every pooling present."""
    present = poolings_of(results, task)
    if pooling is None:
        return present
    wanted = [pooling] if isinstance(pooling, str) else list(pooling)
    unknown = [p for p in wanted if p not in present]
    if unknown or not wanted:
        raise ValueError(f"pooling: expected one or more of {present} (measured for task {task!r}) or None for all, "
                         f"got {pooling!r}.")
    return list(dict.fromkeys(wanted))


def check_layer(results: Sequence[AnalysisResult], task: str, layer: Any, poolings: Sequence[str]) -> None:
    if layer is None:
        return
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise ValueError(f"layer: expected an integer layer index (-1 = last) or None, got {layer!r}.")
    if not any(resolve_layer(r, task, int(layer), p) is not None for r in results for p in poolings):
        present = sorted({lay for r in results for p in poolings for lay in layers_of(r, task, p)})
        raise ValueError(f"layer: expected one of {present} (negative counts from each model's last layer; None = "
                         f"the last measured) for task {task!r} and pooling {', '.join(poolings)}, got {layer!r}.")


def check_metric(results: Sequence[AnalysisResult], task: str, metric: Any, what: str = "metric") -> None:
    present = metrics_of(results, task)
    if metric not in present:
        raise ValueError(f"{what}: expected one of {present} (measured for task {task!r}), got {metric!r}.")


# --- rows -----------------------------------------------------------------------------------------------------------

def metric_row(res: AnalysisResult, task: str, pooling: str, layer: int | None, metric: str
               ) -> dict[str, Any] | None:
    """``res``'s row for ``metric`` at (task, pooling, layer) when it has a finite value, else None."""
    if layer is None:
        return None
    try:
        row = res.value(task, pooling, layer, metric)
    except KeyError:
        return None
    return row if is_finite(row.get("value")) else None


def probe_row(res: AnalysisResult, task: str, pooling: str, layer: int | None, pm: tuple[str, str]
              ) -> dict[str, Any] | None:
    """``res``'s score ``pm`` = (probe, metric) at (task, pooling, layer) when finite, else None."""
    if layer is None:
        return None
    return next((r for r in res.probes if r["task"] == task and r["pooling"] == pooling and int(r["layer"]) == layer
                 and (r["probe"], r["metric"]) == pm and is_finite(r.get("value"))), None)


def layer_series(res: AnalysisResult, task: str, pooling: str, metric: str) -> list[dict[str, Any]]:
    """``res``'s finite rows of ``metric`` for (task, pooling), by layer."""
    return sorted((r for r in res.metrics if r["task"] == task and r["pooling"] == pooling and r["metric"] == metric
                   and is_finite(r.get("value"))), key=lambda r: int(r["layer"]))


def main_probe(results: Sequence[AnalysisResult], task: str) -> tuple[str, str] | None:
    """The (probe, metric) that headlines ``task``: the first of :data:`MAIN_PROBES` present, else the first
    score present (fold standard deviations excluded); None when the task has no probe scores."""
    present = list(dict.fromkeys((r["probe"], r["metric"]) for res in results for r in res.probes
                                 if r["task"] == task and not str(r["metric"]).endswith("_std")
                                 and is_finite(r.get("value"))))
    for pm in MAIN_PROBES:
        if pm in present:
            return pm
    return present[0] if present else None


def spectrum_of(res: AnalysisResult, task: str, pooling: str, layer: int | None) -> np.ndarray | None:
    """The saved covariance eigenvalues at (task, pooling, ``layer`` as :func:`resolve_layer` reads it), as
    float64, when present, finite and with a positive eigenvalue; else None."""
    lay = resolve_layer(res, task, layer, pooling)
    if lay is None:
        return None
    ev = res.arrays.get(array_key("spectrum", task, pooling, lay))
    if ev is None:
        return None
    ev = np.asarray(ev, dtype=np.float64)
    return ev if (ev > 0).sum() >= 1 and np.isfinite(ev).all() else None


def histogram_of(res: AnalysisResult, task: str, pooling: str, layer: int | None) -> np.ndarray | None:
    """The saved histogram of pairwise cosines at (task, pooling, ``layer`` as :func:`resolve_layer` reads it)
    when it counts anything; else None."""
    lay = resolve_layer(res, task, layer, pooling)
    h = None if lay is None else res.arrays.get(array_key("hist", task, pooling, lay))
    if h is None or np.asarray(h).sum() <= 0:
        return None
    return np.asarray(h, dtype=float)


# --- trainer runs ---------------------------------------------------------------------------------------------------

def trajectory_of(res: AnalysisResult) -> dict[str, Any] | None:
    """``res.checkpoint['trajectory']`` ({run, step, tokens, objective}) when ``res`` is a trainer checkpoint of a
    run, else None."""
    t = res.checkpoint.get("trajectory") if isinstance(res.checkpoint, Mapping) else None
    if isinstance(t, Mapping) and t.get("run") is not None and is_finite(t.get("step")):
        return dict(t)
    return None


def group_runs(results: Sequence[AnalysisResult]) -> dict[str, list[AnalysisResult]]:
    """Results carrying a trajectory, grouped by run and sorted by step (others left out)."""
    runs: dict[str, list[AnalysisResult]] = {}
    for r in results:
        t = trajectory_of(r)
        if t is not None:
            runs.setdefault(str(t["run"]), []).append(r)
    return {k: sorted(v, key=lambda r: int(trajectory_of(r)["step"])) for k, v in runs.items()}  # type: ignore[index]


def runs_of(results: Any) -> dict[str, list[AnalysisResult]]:
    """``results`` as {run: checkpoints sorted by step}: a mapping is taken as given; a sequence is grouped by
    :func:`group_runs`. One ValueError when there is no run."""
    if isinstance(results, Mapping):
        runs = {str(k): as_results(v, "results") for k, v in results.items()}
        if not runs:
            raise ValueError("results: expected at least one run, got none.")
        return runs
    runs = group_runs(as_results(results))
    if not runs:
        raise ValueError("results: expected results of a trainer run's checkpoints (checkpoint['trajectory'] with "
                         "run and step), got none; analyse RUN_DIR --checkpoints all.")
    return runs


def step_of(res: AnalysisResult, index: int) -> tuple[int, int | None]:
    """(training step, tokens seen or None) of a checkpoint; (``index``, None) for a result without a
    trajectory."""
    t = trajectory_of(res)
    if t is None:
        return index, None
    tokens = t.get("tokens")
    return int(t["step"]), int(tokens) if is_finite(tokens) else None


# --- comparisons ------------------------------------------------------------------------------------------------------

def comparison_tasks(cmp: ComparisonResult) -> list[str]:
    """Tasks with a difference row, in first-seen order."""
    return list(dict.fromkeys(r["task"] for r in cmp.differences))


def comparison_poolings(cmp: ComparisonResult) -> tuple[str, str] | None:
    """(first, second) pooling of a comparison of two poolings of one model, else None."""
    if cmp.options.get("kind") != "poolings":
        return None
    pair = cmp.options.get("poolings")
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return str(pair[0]), str(pair[1])
    rows = list(dict.fromkeys((r.get("pooling"), r.get("pooling_b")) for r in cmp.differences))
    return (str(rows[0][0]), str(rows[0][1])) if len(rows) == 1 and rows[0][1] else ("first", "second")


def comparison_model(cmp: ComparisonResult) -> str:
    """The model of a comparison of two of its poolings (labels are 'model:pooling')."""
    pair = comparison_poolings(cmp) or ("", "")
    name = str(cmp.options.get("model") or cmp.a)
    return name[: -len(pair[0]) - 1] if pair[0] and name.endswith(f":{pair[0]}") else name


def comparison_label(cmp: ComparisonResult) -> str:
    """'b − a' for two models; 'max − mean (model)' for two poolings of one model (second minus first)."""
    pair = comparison_poolings(cmp)
    if pair is not None:
        return f"{pair[1]} − {pair[0]} ({comparison_model(cmp)})"
    return f"{cmp.b} − {cmp.a}"


def has_intervals(cmp: ComparisonResult) -> bool:
    """Whether any difference row carries a standard error (reference-protocol comparisons carry none)."""
    return any(is_finite(r.get("stderr")) for r in cmp.differences)


def correction_of(cmp: ComparisonResult) -> dict[str, Any]:
    """A comparison's multiple-comparison control: ``correction`` ("none", "holm", "bh"), ``family_size`` (the
    rows with a p-value; None for comparisons saved before p-values were recorded), ``alpha`` (1 - confidence)
    and ``label`` (what '*' / ``significant`` means, for a table header)."""
    opts = cmp.options
    corr = str(opts.get("correction") or "none")
    size = opts.get("family_size")
    conf = confidence_of(cmp)
    alpha = float(opts.get("alpha", 1.0 - conf if conf is not None else 0.05))
    family = f"all {size} rows of this comparison" if size is not None else "all rows of this comparison"
    what = {"none": f"interval excludes 0 (p < {alpha:.3g}), no multiple-comparison correction",
            "holm": f"Holm-adjusted p < {alpha:.3g} (family-wise error rate)",
            "bh": f"Benjamini-Hochberg-adjusted p < {alpha:.3g} (false discovery rate)"}.get(corr, corr)
    return {"correction": corr, "family_size": size, "alpha": alpha,
            "label": f"significant = {what}; family = {family}"}


def is_significant(row: Mapping[str, Any]) -> bool:
    """A difference row's ``significant`` flag: its interval excludes 0, or, when its comparison used a
    correction, its adjusted p-value is below 1 - confidence (:func:`excludes_zero` is the interval alone)."""
    return bool(row.get("significant"))


def pooling_key(row: Mapping[str, Any]) -> str:
    """A difference row's pooling: 'max' for two models, 'max − mean' for two poolings of one model."""
    pb = row.get("pooling_b")
    return f"{pb} − {row['pooling']}" if pb and pb != row["pooling"] else str(row["pooling"])


def layer_key(row: Mapping[str, Any]) -> tuple[int, int]:
    """A difference row's (layer of a, layer of b)."""
    lay = int(row["layer"])
    lb = row.get("layer_b")
    return lay, lay if lb is None or (isinstance(lb, float) and math.isnan(lb)) else int(lb)


def layer_key_text(key: tuple[int, int]) -> str:
    return f"layer {key[0]}" if key[0] == key[1] else f"layer {key[0]} (a) vs {key[1]} (b)"
