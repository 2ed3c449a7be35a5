"""Compare: paired differences b - a ("second minus first") of every metric and probe between two analyses of the
same texts - two models, or two poolings of one model - with intervals from paired statistics, plus linear CKA
and k-NN overlap between the two sets of embeddings. Seed groups build on it (:mod:`embedgeom.seed_groups`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metrics as M
from .analysis import resolve_result
from .metrics.jackknife import delete_group_replicates, jackknife_stderr, t_interval
from .options import check_confidence, check_groups, check_int, check_seed, split_names
from .progress import Progress, emit
from .results import AnalysisResult, ComparisonResult, array_key


def _paired_items(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """Mean of per-item differences b - a with a t-interval, over the items both scored (NaN = not scored). The
    standard error of a mean is its exact delete-one jackknife standard error, sd / sqrt(n)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return float(d.mean()) if n else math.nan, math.nan, math.nan, math.nan
    reps = (d.sum() - d) / (n - 1)  # delete-one means
    se = jackknife_stderr(reps)
    low, high, _ = t_interval(float(d.mean()), se, n - 1, confidence)
    return float(d.mean()), se, low, high


def _paired_spearman(a_scores: np.ndarray, b_scores: np.ndarray, gold: np.ndarray, groups: int, seed: int,
                     confidence: float) -> tuple[float, float, float, float]:
    """Spearman(b, gold) - Spearman(a, gold) with a paired delete-a-group jackknife interval, over the pairs both
    scored (text-disjoint folds leave some unscored)."""
    from scipy.stats import spearmanr

    scored = np.isfinite(a_scores) & np.isfinite(b_scores)
    a_scores, b_scores, gold = a_scores[scored], b_scores[scored], gold[scored]

    def diff(keep: np.ndarray) -> float:
        return float(spearmanr(b_scores[keep], gold[keep]).statistic - spearmanr(a_scores[keep], gold[keep]).statistic)

    g = min(groups, len(gold))
    full, reps = delete_group_replicates(diff, len(gold), g, seed)
    se = jackknife_stderr(reps)
    low, high, _ = t_interval(full, se, g - 1, confidence)
    return full, se, low, high


#: One matched pair of embedding sets: (task, a's pooling, a's layer, b's pooling, b's layer).
Match = tuple[str, str, int, str, int]


def compare(
    a: AnalysisResult | str | os.PathLike,
    b: AnalysisResult | str | os.PathLike | None = None,
    *,
    poolings: str | Sequence[str] | None = None,
    groups: int = M.uncertainty.DEFAULT_GROUPS,
    seed: int = 0,
    confidence: float = 0.95,
    knn_k: int = 10,
    progress: Progress | None = None,
    **analyze_kwargs: Any,
) -> ComparisonResult:
    """Paired differences ``b - a`` ("second minus first") of every metric and probe, with intervals, on the same
    texts; plus linear CKA (plain and debiased) and k-NN overlap between the two sets of embeddings.

    Two models: ``a`` and ``b`` are AnalysisResults, saved analysis directories, or checkpoints (analysed here with
    ``analyze_kwargs``), measured on identical texts (same data specs, subsample and seed) and saved with
    embeddings; each (task, pooling, layer) both measured is compared (the last layers of models of different
    depth match). Comparing an analysis with itself (identical embeddings) is refused; two models with the same
    label are labelled ``name (a)`` / ``name (b)``.

    Two poolings of one model: ``compare(a, poolings=("mean", "max"))`` gives ``max - mean`` per (task, layer) on
    the same texts (``options["kind"] == "poolings"``; rows carry ``pooling`` = the first, ``pooling_b`` = the
    second).

    Under the reference protocol (``protocol="paper"`` results) the differences are of its own point values,
    without intervals, as it reports them. With many rows, expect about 5% of intervals to exclude zero by chance
    at 95% confidence.
    """
    groups, seed, confidence = check_groups(groups), check_seed(seed), check_confidence(confidence)
    knn_k = check_int(knn_k, "knn_k", minimum=1, fix="Pass e.g. knn_k=10.")
    if poolings is not None:
        pairing = _pooling_pairing(a, b, poolings, analyze_kwargs)
    else:
        pairing = _model_pairing(a, b, analyze_kwargs)
    ra, rb = pairing.a, pairing.b
    diffs, sims = _compare_matches(pairing, groups, seed, confidence, knn_k, progress)
    return ComparisonResult(pairing.label_a, pairing.label_b, diffs, sims,
                            {"groups": groups, "seed": seed, "confidence": confidence, "knn_k": knn_k,
                             "direction": "diff = b - a (second minus first)", "kind": pairing.kind,
                             "poolings": list(split_names(poolings)) if poolings is not None else None,
                             "protocol": ra.options.get("protocol")},
                            {"a": {"checkpoint": ra.checkpoint, "card": ra.card},
                             "b": {"checkpoint": rb.checkpoint, "card": rb.card}})


@dataclass(frozen=True)
class _Pairing:
    """What compare() compares: results ``a`` and ``b`` (the same result for two poolings), the matched embedding
    sets, their labels, and the kind of comparison (``"models"`` or ``"poolings"``)."""

    a: AnalysisResult
    b: AnalysisResult
    matches: list[Match]
    label_a: str
    label_b: str
    kind: str


def _pooling_pairing(a: Any, b: Any, poolings: str | Sequence[str], analyze_kwargs: dict[str, Any]) -> _Pairing:
    """Two poolings of one model: every (task, layer) at which both were measured."""
    pair = split_names(poolings)
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ValueError(f"poolings: expected two different poolings to compare, e.g. ('mean', 'max'), got "
                         f"{poolings!r}.")
    if b is not None:
        raise ValueError("b: expected no second model when poolings= is given (it compares two poolings of "
                         "a). Compare models without poolings=, or poolings of one model without b.")
    ra = resolve_result(a, **analyze_kwargs)
    _check_embeddings(ra, ra)
    return _Pairing(ra, ra, _pooling_matches(ra, pair[0], pair[1]), f"{ra.name}:{pair[0]}", f"{ra.name}:{pair[1]}",
                    "poolings")


def _model_pairing(a: Any, b: Any, analyze_kwargs: dict[str, Any]) -> _Pairing:
    """Two models: every (task, pooling, layer) both measured on identical texts (last layers match each other);
    refused when they hold the same embeddings."""
    if b is None:
        raise ValueError("b: expected a second model to compare with a, got none. Pass b, or poolings=('mean', "
                         "'max') to compare two poolings of a.")
    ra, rb = resolve_result(a, **analyze_kwargs), resolve_result(b, **analyze_kwargs)
    _check_comparable(ra, rb)
    matches = [(t, p, la, p, lb) for (t, p, la), lb in _matched_keys(ra, rb, [t for t in ra.tasks if t in rb.tasks])]
    if not matches:
        raise ValueError(f"b: expected (task, pooling, layer) combinations in common with a, got none (a: "
                         f"{ra.measured()[:4]}..., b: {rb.measured()[:4]}...). Use the same --pooling and "
                         "--layer, or poolings=(...) to compare two poolings of one model.")
    if ra is rb or all(np.array_equal(ra.embedding(t, p, la), rb.embedding(t, q, lb))
                       for t, p, la, q, lb in matches):
        raise ValueError("b: holds the same embeddings as a (the same model analysed twice), so every "
                         "difference would be 0. Compare two models, or two poolings of one with "
                         "poolings=('mean', 'max').")
    label_a, label_b = (ra.name, rb.name) if ra.name != rb.name else (f"{ra.name} (a)", f"{rb.name} (b)")
    return _Pairing(ra, rb, matches, label_a, label_b, "models")


def _compare_matches(pairing: _Pairing, groups: int, seed: int, confidence: float, knn_k: int,
                     progress: Progress | None) -> tuple[list[dict], list[dict]]:
    """Differences (metrics, alignment, probes) and similarities (CKA, k-NN overlap) for every matched pair of
    embedding sets; under the reference protocol, differences of its point values."""
    ra, rb = pairing.a, pairing.b
    paper = ra.options.get("protocol") == "paper"
    metric_names = [m for m in M.names("set") if any(r["metric"] == m for r in ra.metrics)]
    diffs: list[dict] = []
    sims: list[dict] = []
    for i, (task, pooling, layer, pooling_b, layer_b) in enumerate(pairing.matches):
        emit(progress, "compare", i, len(pairing.matches))
        xa, xb = ra.embedding(task, pooling, layer), rb.embedding(task, pooling_b, layer_b)
        base = {"task": task, "pooling": pooling, "layer": layer, "pooling_b": pooling_b, "layer_b": layer_b}
        if paper:  # the reference protocol's own numbers, as it reports them: point values, no interval
            diffs += _point_differences(base, ra, rb)
        else:
            diffs += _metric_differences(base, metric_names, xa, xb, groups, seed, confidence)
            diffs += _alignment_difference(base, ra, xa, xb, confidence)
            diffs += _probe_differences(ra, rb, base, groups, seed, confidence)
        sims += _similarities(base, xa, xb, groups, seed, confidence, knn_k)
    emit(progress, "compare", len(pairing.matches), len(pairing.matches))
    return diffs, sims


def _alignment_difference(base: dict, ra: AnalysisResult, xa: np.ndarray, xb: np.ndarray, confidence: float
                          ) -> list[dict]:
    """Paired b - a alignment on the task's positive pairs (none for joined pairs or fewer than 2 positives)."""
    task = base["task"]
    pos = ra.structure(task, "positives")
    if pos is None or len(pos) < 2 or ra.tasks[task].get("items") != "texts":
        return []
    d = M.paired_difference("alignment", xa[pos[:, 0]], xb[pos[:, 0]], y_a=xa[pos[:, 1]], y_b=xb[pos[:, 1]],
                            confidence=confidence)
    return [{**base, "kind": "metric", "name": "alignment", "value_a": d.value_a, "value_b": d.value_b,
             "diff": d.value, "stderr": d.stderr, "low": d.low, "high": d.high, "significant": d.significant,
             "n": d.n, "method": d.method}]


def _check_embeddings(ra: AnalysisResult, rb: AnalysisResult) -> None:
    if not (ra.has_embeddings() and rb.has_embeddings()):
        raise ValueError("a, b: expected analyses saved with embeddings (paired intervals need them), got one "
                         "without. Re-run analyze without --no-embeddings.")


def _check_comparable(ra: AnalysisResult, rb: AnalysisResult) -> None:
    """Same protocol, tasks in common measured on identical texts, embeddings saved."""
    if ra.options.get("protocol") != rb.options.get("protocol"):
        raise ValueError(f"b: expected the same protocol as a ({ra.options.get('protocol')}), got "
                         f"{rb.options.get('protocol')}. Analyse both with the same --protocol.")
    common = [t for t in ra.tasks if t in rb.tasks]
    if not common:
        raise ValueError(f"b: expected tasks in common with a ({list(ra.tasks)}), got {list(rb.tasks)}. Analyse "
                         "both on the same --data.")
    for t in common:
        ha, hb = ra.tasks[t].get("content_hash"), rb.tasks[t].get("content_hash")
        if ha != hb:
            raise ValueError(f"b: task {t!r} was measured on different texts than in a (content hash "
                             f"{str(ha)[:12]} vs {str(hb)[:12]}). Re-run analyze with the same --data, --max-texts "
                             "and --seed.")
    _check_embeddings(ra, rb)


def _pooling_matches(res: AnalysisResult, pa: str, pb: str) -> list[Match]:
    measured = res.measured()
    have = sorted({p for _, p, _ in measured})
    for p in (pa, pb):
        if p not in have:
            raise ValueError(f"poolings: {p!r} was not measured in {res.name!r} (measured: {', '.join(have)}). "
                             "Re-run analyze with both poolings.")
    keys = set(measured)
    out = [(t, pa, lay, pb, lay) for t, p, lay in measured if p == pa and (t, pb, lay) in keys]
    if not out:
        raise ValueError(f"poolings: {pa!r} and {pb!r} share no (task, layer) in {res.name!r}. Re-run analyze with "
                         "both poolings at the same layers.")
    return out


def _similarities(base: dict, xa: np.ndarray, xb: np.ndarray, groups: int, seed: int, confidence: float,
                  knn_k: int) -> list[dict]:
    """Linear CKA (plain, debiased) and k-NN overlap between the two models' embeddings of the same items."""
    rows = []
    for name in ("linear_cka", "linear_cka_debiased", "knn_overlap"):
        kwargs = {"k": min(knn_k, len(xa) - 1)} if name == "knn_overlap" else {}
        ci = M.confidence_interval(name, xa, xb, confidence=confidence, groups=min(groups, len(xa)), seed=seed,
                                   **kwargs)
        rows.append({**base, "name": name, **ci.as_dict(), **({"k": kwargs["k"]} if kwargs else {})})
    return rows


def _point_differences(base: dict, ra: AnalysisResult, rb: AnalysisResult) -> list[dict]:
    """b - a of every number both results report for this match, without an interval (the reference protocol
    reports point values only)."""
    key_a = (base["task"], base["pooling"], base["layer"])
    key_b = (base["task"], base["pooling_b"], base["layer_b"])
    rows = []
    for kind, recs_a, recs_b, key in (("metric", ra.metrics, rb.metrics, lambda r: r["metric"]),
                                      ("probe", ra.probes, rb.probes, lambda r: f"{r['probe']}:{r['metric']}")):
        vals_b = {key(r): r for r in recs_b if (r["task"], r["pooling"], int(r["layer"])) == key_b}
        for r in recs_a:
            if (r["task"], r["pooling"], int(r["layer"])) != key_a or key(r) not in vals_b:
                continue
            va, vb = float(r["value"]), float(vals_b[key(r)]["value"])
            rows.append({**base, "kind": kind, "name": key(r), "value_a": va, "value_b": vb, "diff": vb - va,
                         "stderr": math.nan, "low": math.nan, "high": math.nan, "significant": False,
                         "n": r.get("n"), "method": "reference protocol: point values, no interval"})
    return rows


def _metric_differences(base: dict, names: list[str], xa: np.ndarray, xb: np.ndarray, groups: int, seed: int,
                        confidence: float) -> list[dict]:
    """Paired b - a differences of the single-set metrics; a metric undefined for either model's set becomes
    a NaN row saying why."""
    kw = {"groups": min(groups, len(xa)), "seed": seed, "confidence": confidence}
    try:
        got = M.paired_differences(names, xa, xb, **kw)
    except ValueError:
        got = {}
        for name in names:
            try:
                got[name] = M.paired_difference(name, xa, xb, **kw)
            except ValueError as err:
                got[name] = str(err).split(". ")[0]
    rows = []
    for name in names:
        d = got[name]
        if isinstance(d, str):
            rows.append({**base, "kind": "metric", "name": name, "value_a": math.nan, "value_b": math.nan,
                         "diff": math.nan, "stderr": math.nan, "low": math.nan, "high": math.nan,
                         "significant": False, "n": len(xa), "method": f"undefined: {d}"})
            continue
        rows.append({**base, "kind": "metric", "name": name, "value_a": d.value_a, "value_b": d.value_b,
                     "diff": d.value, "stderr": d.stderr, "low": d.low, "high": d.high,
                     "significant": d.significant, "n": d.n, "method": d.method})
    return rows


def _matched_keys(ra: AnalysisResult, rb: AnalysisResult, common: list[str]
                  ) -> list[tuple[tuple[str, str, int], int]]:
    """(a's key, b's layer) pairs measured by both. Layers match by index, and the last layers of two models
    of different depth match each other (both are 'the last layer')."""
    last_a = int(ra.checkpoint.get("num_layers", -1))
    last_b = int(rb.checkpoint.get("num_layers", -1))
    keys_b = set(rb.measured())
    out = []
    for task, pooling, layer in ra.measured():
        if task not in common:
            continue
        layer_b = last_b if layer == last_a else layer
        if (task, pooling, layer_b) in keys_b:
            out.append(((task, pooling, layer), layer_b))
    return out


def _probe_differences(ra: AnalysisResult, rb: AnalysisResult, match: dict, groups: int, seed: int,
                       confidence: float) -> list[dict]:
    out = []
    task, pooling, layer, pooling_b, layer_b = (match[k] for k in ("task", "pooling", "layer", "pooling_b",
                                                                    "layer_b"))
    base = {**match, "kind": "probe"}
    for r in ra.probes:
        if (r["task"], r["pooling"], int(r["layer"])) != (task, pooling, layer):
            continue
        key_a = array_key("items", task, pooling, layer, r["probe"], r["metric"])
        key_b = array_key("items", task, pooling_b, layer_b, r["probe"], r["metric"])
        other = next((q for q in rb.probes if (q["task"], q["pooling"], int(q["layer"]), q["probe"], q["metric"])
                      == (task, pooling_b, layer_b, r["probe"], r["metric"])), None)
        if other is None or key_a not in ra.arrays or key_b not in rb.arrays:
            continue
        ia, ib = ra.arrays[key_a], rb.arrays[key_b]
        if r["metric"] == "accuracy":
            diff, se, lo, hi = _paired_items(ia, ib, confidence)
            method = "paired mean of per-item correctness (out-of-fold)"
        else:  # spearman of per-item scores (cosines or ridge predictions) against the gold scores
            gold = ra.structure(task, "pair_labels")
            if gold is None:
                continue
            diff, se, lo, hi = _paired_spearman(ia, ib, gold, groups, seed, confidence)
            method = f"paired delete-a-group jackknife ({min(groups, len(gold))} groups)"
        out.append({**base, "name": f"{r['probe']}:{r['metric']}", "value_a": r["value"], "value_b": other["value"],
                    "diff": diff, "stderr": se, "low": lo, "high": hi, "significant": not (lo <= 0.0 <= hi),
                    "n": int((np.isfinite(ia) & np.isfinite(ib)).sum()), "method": method})
    return out


#: Probe scores where higher is better (the task probes); the lexical probe and the semantic-lexical gap have no
#: better direction.
_PROBE_HIGHER_BETTER = ("accuracy", "macro_f1", "mcc", "f1", "spearman")


def better_side(row: dict[str, Any]) -> str | None:
    """Which side of a difference row is better: ``"a"``, ``"b"``, or None when the interval includes 0 (no
    difference shown), the row has no interval, or the quantity has no better direction. Directions: a metric's
    ``REGISTRY[name].higher_is_better``; for probes, higher task-probe scores (accuracy, F1, MCC, Spearman) are
    better."""
    if not row.get("significant") or not np.isfinite(row.get("diff", math.nan)) or row.get("diff") == 0:
        return None
    name = str(row.get("name", ""))
    if row.get("kind") == "probe":
        probe, _, metric = name.partition(":")
        higher = True if probe not in ("lexical", "gap") and metric in _PROBE_HIGHER_BETTER else None
    else:
        info = M.REGISTRY.get(name)
        higher = info.higher_is_better if info is not None else None
    if higher is None:
        return None
    return "b" if (row["diff"] > 0) == higher else "a"
