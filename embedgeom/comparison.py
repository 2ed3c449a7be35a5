"""Compare: paired differences b - a ("second minus first") of every metric and probe between two analyses of the
same texts - two models, or two poolings of one model - with intervals from paired statistics, a p-value per row
and an optional multiple-comparison correction over the rows of the comparison (:mod:`embedgeom.multiple_testing`),
plus linear CKA and k-NN overlap between the two sets of embeddings. Seed groups build on it
(:mod:`embedgeom.seed_groups`). :func:`models_table` puts several models side by side (metrics and task probes
with intervals, n and d); :class:`IncomparableWarning` says when the sides differ in n or d.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metrics as M
from .analysis import resolve_result
from .metrics.jackknife import delete_group_replicates, jackknife_stderr, t_interval
from .multiple_testing import Correction, apply_correction, check_correction, two_sided_p
from .options import check_confidence, check_groups, check_int, check_seed, split_names
from .progress import Progress, emit
from .queries import IncomparableWarning as IncomparableWarning  # one class for compare, tables and figures
from .results import AnalysisResult, ComparisonResult, array_key

#: Metrics whose values scale with n and d (ranks and spectral spread are bounded by min(n - 1, d)) or, for
#: alpha-ReQ and its R^2, are fitted over an eigenvalue window set by n and d.
SCALE_DEPENDENT: tuple[str, ...] = ("effective_rank", "rankme", "stable_rank", "participation_ratio",
                                    "spectral_entropy", "rank_at_variance", "alpha_req", "alpha_req_r2")
#: Metrics on L2-normalised vectors that are comparable across d (at different n each is an estimate at its n).
DIMENSION_FREE: tuple[str, ...] = ("uniformity", "alignment", "mean_cosine")


def incomparable_message(task: str, sides: Sequence[tuple[str, int | None, int | None]]) -> str:
    """The :class:`IncomparableWarning` text for ``task`` and ``sides`` = [(label, n, d), ...]."""
    shown = "; ".join(f"{label}: n={n if n is not None else '?'}, d={d if d is not None else '?'}"
                      for label, n, d in sides)
    ns = {n for _, n, _ in sides if n is not None}
    ds = {d for _, _, d in sides if d is not None}
    what = " and ".join(w for w, differ in (("n", len(ns) > 1), ("d", len(ds) > 1)) if differ) or "n or d"
    return (f"task {task!r}: the compared results differ in {what} ({shown}). Not comparable as they stand: "
            "effective rank, RankMe, stable rank, participation ratio, spectral entropy and rank at 90% variance "
            "scale with n and d (bounded by min(n - 1, d)), and alpha-ReQ is fitted over an eigenvalue window set "
            "by n and d. Comparable across d: uniformity, alignment and mean cosine (on L2-normalised vectors). "
            "Every interval is for the value at its own n; compare at equal n where the rank metrics matter.")


def _warn_incomparable(task: str, sides: Sequence[tuple[str, int | None, int | None]], stacklevel: int) -> None:
    """Warn when ``sides`` differ in n or d; ``stacklevel`` counts from the caller of this function."""
    ns = {n for _, n, _ in sides if n is not None}
    ds = {d for _, _, d in sides if d is not None}
    if len(ns) > 1 or len(ds) > 1:
        warnings.warn(incomparable_message(task, sides), IncomparableWarning, stacklevel=stacklevel + 1)


def _paired_items(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float, float, float]:
    """Mean of per-item differences b - a with a t-interval on n - 1 degrees of freedom, over the items both scored
    (NaN = not scored): (diff, stderr, low, high, df). The standard error of a mean is its exact delete-one
    jackknife standard error, sd / sqrt(n)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return float(d.mean()) if n else math.nan, math.nan, math.nan, math.nan, math.nan
    reps = (d.sum() - d) / (n - 1)  # delete-one means
    se = jackknife_stderr(reps)
    low, high, _ = t_interval(float(d.mean()), se, n - 1, confidence)
    return float(d.mean()), se, low, high, float(n - 1)


def _paired_spearman(a_scores: np.ndarray, b_scores: np.ndarray, gold: np.ndarray, groups: int, seed: int,
                     confidence: float) -> tuple[float, float, float, float, float]:
    """Spearman(b, gold) - Spearman(a, gold) with a paired delete-a-group jackknife interval (t on groups - 1
    degrees of freedom), over the pairs both scored (text-disjoint folds leave some unscored): (diff, stderr,
    low, high, df)."""
    from scipy.stats import spearmanr

    scored = np.isfinite(a_scores) & np.isfinite(b_scores)
    a_scores, b_scores, gold = a_scores[scored], b_scores[scored], gold[scored]

    def diff(keep: np.ndarray) -> float:
        return float(spearmanr(b_scores[keep], gold[keep]).statistic - spearmanr(a_scores[keep], gold[keep]).statistic)

    g = min(groups, len(gold))
    full, reps = delete_group_replicates(diff, len(gold), g, seed)
    se = jackknife_stderr(reps)
    low, high, _ = t_interval(full, se, g - 1, confidence)
    return full, se, low, high, float(g - 1)


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
    correction: Correction = "none",
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
    second). Two models, each with its own pooling: ``compare(a, b, poolings=("mean", "last"))`` pairs a's
    ``mean`` with b's ``last`` (an encoder against a decoder-only model, whose pooling sets differ); rows carry
    each side's pooling and the labels name it (``a:mean``, ``b:last``). Two models that share no pooling are
    refused, naming each side's poolings.

    Under the reference protocol (``protocol="paper"`` results) the differences are of its own point values,
    without intervals, as it reports them.

    **p-values and multiple comparisons.** Every difference row carries ``df`` and ``p``: the two-sided p-value of
    ``b - a = 0`` from the same Student-t reference as its interval (``2 * t_df.sf(|diff| / stderr)``; df =
    jackknife replicates - 1: delete-a-group groups - 1 for spectral metrics and probe Spearman, items - 1 for
    delete-one metrics and probe accuracy). With many rows, about 5% of the intervals of true-zero differences
    exclude 0 at 95% confidence, so ``correction`` adjusts the p-values over the **family** = every difference
    row of this one comparison that has a p-value: ``"none"`` (default; ``significant`` = the interval excludes
    0), ``"holm"`` (family-wise error rate) or ``"bh"`` (Benjamini-Hochberg false discovery rate), both at
    ``1 - confidence``. Rows gain ``p_adjusted``, ``correction`` and ``significant_unadjusted``; under a
    correction ``significant`` (and so :func:`better_side`) follows ``p_adjusted < 1 - confidence``; intervals
    stay per-row. ``options`` records the correction, alpha, the family and its size (``family_size``) and the
    p-value's definition. See :mod:`embedgeom.multiple_testing`.

    **n and d.** ``options["n"]`` holds each task's number of items (the same on both sides: paired differences
    need identical texts, and different texts are refused); rows carry ``d_a`` / ``d_b``, the two sides'
    embedding dimensions. When they differ, an :class:`IncomparableWarning` per task says which metrics scale
    with d (the ranks, spectral entropy, alpha-ReQ's fit window) and which do not (uniformity, alignment, mean
    cosine).
    """
    groups, seed, confidence = check_groups(groups), check_seed(seed), check_confidence(confidence)
    knn_k = check_int(knn_k, "knn_k", minimum=1, fix="Pass e.g. knn_k=10.")
    correction = check_correction(correction)
    if poolings is not None:
        pairing = _pooling_pairing(a, b, poolings, analyze_kwargs)
    else:
        pairing = _model_pairing(a, b, analyze_kwargs)
    ra, rb = pairing.a, pairing.b
    diffs, sims = _compare_matches(pairing, groups, seed, confidence, knn_k, progress)
    _warn_dimensions(pairing, diffs)
    add_p_values(diffs)
    family = apply_correction(diffs, correction, confidence)
    tasks = list(dict.fromkeys(t for t, *_ in pairing.matches))
    return ComparisonResult(pairing.label_a, pairing.label_b, diffs, sims,
                            {"groups": groups, "seed": seed, "confidence": confidence, "knn_k": knn_k,
                             "direction": "diff = b - a (second minus first)", "kind": pairing.kind,
                             "poolings": list(split_names(poolings)) if poolings is not None else None,
                             "protocol": ra.options.get("protocol"), **family,
                             "n": {t: ra.tasks[t].get("n_items") for t in tasks}},
                            {"a": {"checkpoint": ra.checkpoint, "card": ra.card},
                             "b": {"checkpoint": rb.checkpoint, "card": rb.card}})


def add_p_values(rows: list[dict]) -> None:
    """Set ``p`` on every difference row from its ``diff``, ``stderr`` and ``df`` (see
    :func:`embedgeom.multiple_testing.two_sided_p`); NaN where the row has no interval."""
    for r in rows:
        r["p"] = two_sided_p(r.get("diff", math.nan), r.get("stderr", math.nan), r.get("df", math.nan))


def _warn_dimensions(pairing: _Pairing, diffs: list[dict]) -> None:
    """One :class:`IncomparableWarning` per task whose two sides have different embedding dimensions."""
    for task in dict.fromkeys(t for t, *_ in pairing.matches):
        dims = {(r["d_a"], r["d_b"]) for r in diffs if r["task"] == task and "d_a" in r}
        for d_a, d_b in sorted(d for d in dims if d[0] != d[1]):
            n = pairing.a.tasks[task].get("n_items")
            _warn_incomparable(task, [(pairing.label_a, n, d_a), (pairing.label_b, n, d_b)], stacklevel=3)


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
    if b is not None:  # two models, each with its own pooling (e.g. an encoder's mean against a decoder's last)
        ra, rb = resolve_result(a, **analyze_kwargs), resolve_result(b, **analyze_kwargs)
        _check_comparable(ra, rb)
        for res, p, side in ((ra, pair[0], "a"), (rb, pair[1], "b")):
            have = sorted({q for _, q, _ in res.measured()})
            if p not in have:
                raise ValueError(f"poolings: {p!r} was not measured in {side} ({res.name!r}: {', '.join(have)}). "
                                 f"Pass poolings=(a's pooling, b's pooling) from what each side measured.")
        keys_b = set(rb.measured())
        last_a, last_b = int(ra.checkpoint.get("num_layers", -1)), int(rb.checkpoint.get("num_layers", -1))
        matches = [(t, pair[0], lay, pair[1], last_b if lay == last_a else lay) for t, q, lay in ra.measured()
                   if q == pair[0] and t in rb.tasks
                   and (t, pair[1], last_b if lay == last_a else lay) in keys_b]
        if not matches:
            raise ValueError(f"poolings: a's {pair[0]!r} and b's {pair[1]!r} share no (task, layer). Analyse both at "
                             "the same layers (the last layers of models of different depth match).")
        return _Pairing(ra, rb, matches, f"{ra.name}:{pair[0]}", f"{rb.name}:{pair[1]}", "models")
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
        pa = sorted({p for _, p, _ in ra.measured()})
        pb = sorted({p for _, p, _ in rb.measured()})
        if not set(pa) & set(pb):
            raise ValueError(f"b: shares no pooling with a (a measured {', '.join(pa)}; b measured {', '.join(pb)}). "
                             f"Pair one of each with poolings=({pa[0]!r}, {pb[0]!r}) (CLI: --poolings "
                             f"{pa[0]},{pb[0]}).")
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
        base = {"task": task, "pooling": pooling, "layer": layer, "pooling_b": pooling_b, "layer_b": layer_b,
                "d_a": int(xa.shape[1]), "d_b": int(xb.shape[1])}
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
             "n": d.n, "df": float(d.replicates - 1), "method": d.method}]


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
            na, nb = ra.tasks[t].get("n_items"), rb.tasks[t].get("n_items")
            raise ValueError(f"b: task {t!r} was measured on different texts than in a (n = {na} vs {nb} items; "
                             f"content hash {str(ha)[:12]} vs {str(hb)[:12]}), and paired differences need the "
                             "same texts. Re-run analyze with the same --data, --max-texts and --seed (or put "
                             "unpaired results side by side with comparison.models_table).")
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
                         "n": r.get("n"), "df": math.nan, "method": "reference protocol: point values, no interval"})
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
                         "significant": False, "n": len(xa), "df": math.nan, "method": f"undefined: {d}"})
            continue
        rows.append({**base, "kind": "metric", "name": name, "value_a": d.value_a, "value_b": d.value_b,
                     "diff": d.value, "stderr": d.stderr, "low": d.low, "high": d.high,
                     "significant": d.significant, "n": d.n, "df": float(d.replicates - 1), "method": d.method})
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
            diff, se, lo, hi, df = _paired_items(ia, ib, confidence)
            method = "paired mean of per-item correctness (out-of-fold)"
        else:  # spearman of per-item scores (cosines or ridge predictions) against the gold scores
            gold = ra.structure(task, "pair_labels")
            if gold is None and ra.tasks.get(task, {}).get("label_task") == "regression":
                gold = ra.structure(task, "labels")  # a single-text regression probe: its per-item predictions
            if gold is None:
                continue
            diff, se, lo, hi, df = _paired_spearman(ia, ib, gold, groups, seed, confidence)
            method = f"paired delete-a-group jackknife ({min(groups, len(gold))} groups)"
        out.append({**base, "name": f"{r['probe']}:{r['metric']}", "value_a": r["value"], "value_b": other["value"],
                    "diff": diff, "stderr": se, "low": lo, "high": hi, "significant": not (lo <= 0.0 <= hi),
                    "n": int((np.isfinite(ia) & np.isfinite(ib)).sum()), "df": df, "method": method})
    return out


#: Probe scores where higher is better (the task probes); the lexical probe and the semantic-lexical gap have no
#: better direction.
_PROBE_HIGHER_BETTER = ("accuracy", "macro_f1", "mcc", "f1", "spearman", "r2")


def better_side(row: dict[str, Any]) -> str | None:
    """Which side of a difference row is better: ``"a"``, ``"b"``, or None when the row is not significant (its
    interval includes 0; under a multiple-comparison correction, its adjusted p-value is not below 1 - confidence),
    the row has no interval, or the quantity has no better direction. Directions: a metric's
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


# --- several models side by side --------------------------------------------------------------------------------

#: The metrics :func:`models_table` shows by default (those any result measured), in this order.
MODELS_TABLE_METRICS: tuple[str, ...] = ("uniformity", "alignment", "effective_rank", "rankme", "isoscore",
                                         "alpha_req", "mean_cosine")
#: Probe scores :func:`models_table` shows: the task probes' accuracy and Spearman (not the lexical probe or gaps).
TABLE_PROBE_METRICS: tuple[str, ...] = ("accuracy", "spearman")
#: How the probe columns' intervals are made (probe rows carry a standard error, not an interval).
PROBE_INTERVAL = ("probe score -+ z * its standard error, z the normal quantile at the result's confidence "
                  "(binomial s.e. for accuracy, delete-a-group jackknife s.e. for Spearman), clipped to the "
                  "score's range")
_PROBE_RANGE = {"accuracy": (0.0, 1.0), "spearman": (-1.0, 1.0)}


def _dimension(res: AnalysisResult, task: str, pooling: str, layer: int) -> int | None:
    """The embedding dimension of one set: its saved embeddings' width, else the checkpoint's hidden size."""
    key = array_key("emb", task, pooling, layer)
    if key in res.arrays:
        return int(np.shape(res.arrays[key])[1])
    hidden = res.checkpoint.get("hidden_size")
    return int(hidden) if isinstance(hidden, (int, np.integer)) else None


def _unique_labels(results: Sequence[AnalysisResult]) -> list[str]:
    names = [r.name for r in results]
    return [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def models_table(results: Sequence[AnalysisResult], *, metrics: Sequence[str] | str | None = None,
                 layer: int | None = None) -> Any:
    """Several models side by side: a pandas DataFrame with one row per (model, task, pooling) at one layer.

    Columns: ``model`` (the result's name; ``name (i)`` when names repeat), ``task``, ``pooling``, ``layer``, ``n``
    (the task's number of items), ``d`` (the embedding dimension), ``confidence``; per metric ``m``: ``m``,
    ``m_low``, ``m_high`` (its jackknife interval); per task-probe score ``probe:metric`` (accuracy, Spearman):
    ``probe:metric``, ``probe:metric_low``, ``probe:metric_high`` (:data:`PROBE_INTERVAL`), ``probe:metric_n``
    (items or pairs scored) and, where the probe rows carry one, ``probe:metric_chance``. A cell is NaN where that
    model did not measure it (probe columns of another task too). ``frame.attrs`` records the probe interval's
    definition.

    ``metrics``: names (default :data:`MODELS_TABLE_METRICS` that were measured). ``layer``: None = each model's
    last measured layer for that task and pooling (models of different depth meet at their last layers); an
    integer picks that layer (negative counts from each model's last layer).

    Results are not paired here (no shared texts needed). When the models of a task differ in n or d, an
    :class:`IncomparableWarning` per task says which columns are comparable and which are not.
    """
    import pandas as pd
    from scipy.stats import norm

    from .queries import as_results, resolve_layer

    results = as_results(results, "results")
    measured = list(dict.fromkeys(r["metric"] for res in results for r in res.metrics))
    if metrics is None:
        cols = [m for m in MODELS_TABLE_METRICS if m in measured]
    else:
        cols = list(split_names(metrics))
        unknown = [m for m in cols if m not in measured]
        if not cols or unknown:
            raise ValueError(f"metrics: expected names of metrics the results measured ({', '.join(measured)}), "
                             f"got {unknown or metrics!r}. Pass e.g. metrics=('uniformity', 'effective_rank').")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, (int, np.integer))):
        raise ValueError(f"layer: expected an integer layer or None (each model's last measured layer), got "
                         f"{layer!r}.")
    labels = _unique_labels(results)
    rows: list[dict[str, Any]] = []
    for label, res in zip(labels, results, strict=True):
        conf = res.options.get("confidence")
        conf = float(conf) if isinstance(conf, (int, float)) and 0 < conf < 1 else 0.95
        z = float(norm.ppf(0.5 + conf / 2.0))
        for task, pooling in dict.fromkeys((t, p) for t, p, _ in res.measured()):
            lay = resolve_layer(res, task, layer, pooling)
            if lay is None or (task, pooling, lay) not in set(res.measured()):
                continue
            row: dict[str, Any] = {"model": label, "task": task, "pooling": pooling, "layer": lay,
                                   "n": res.tasks.get(task, {}).get("n_items"),
                                   "d": _dimension(res, task, pooling, lay), "confidence": conf}
            for m in cols:
                try:
                    r = res.value(task, pooling, lay, m)
                except KeyError:
                    continue
                row[m] = float(r["value"])
                row[f"{m}_low"], row[f"{m}_high"] = float(r.get("low", math.nan)), float(r.get("high", math.nan))
            for r in res.probes:
                if ((r["task"], r["pooling"], int(r["layer"])) != (task, pooling, lay)
                        or r["metric"] not in TABLE_PROBE_METRICS or r["probe"] in ("lexical", "gap")):
                    continue
                key, v, se = f"{r['probe']}:{r['metric']}", float(r["value"]), float(r.get("stderr", math.nan))
                lo_b, hi_b = _PROBE_RANGE[r["metric"]]
                row[key] = v
                row[f"{key}_low"] = max(lo_b, v - z * se) if math.isfinite(se) else math.nan
                row[f"{key}_high"] = min(hi_b, v + z * se) if math.isfinite(se) else math.nan
                row[f"{key}_n"] = r.get("n")
                if r.get("chance") is not None:
                    row[f"{key}_chance"] = r["chance"]
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["probe_interval"] = PROBE_INTERVAL
    warned: set[str] = set()
    for (task, _pooling), part in (frame.groupby(["task", "pooling"], sort=False) if len(frame) else []):
        if task in warned or len(part) < 2:
            continue
        sides = [(str(r.model), None if pd.isna(r.n) else int(r.n), None if pd.isna(r.d) else int(r.d))
                 for r in part.itertuples()]
        if len({s[1] for s in sides}) > 1 or len({s[2] for s in sides}) > 1:
            warned.add(task)
            _warn_incomparable(task, sides, stacklevel=2)
    return frame
