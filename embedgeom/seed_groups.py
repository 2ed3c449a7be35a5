"""Seed groups: runs trained with the same seeds under two recipes (e.g. MLM and hybrid at seeds 0, 1, 2), each
pair compared as :func:`embedgeom.compare` does, then per row the mean of the per-seed differences with a
between-seed interval that includes training variation, and in how many seeds the difference holds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import metrics as M
from .analysis import resolve_result
from .comparison import add_p_values, compare
from .metrics.jackknife import t_interval
from .multiple_testing import Correction, apply_correction, check_correction
from .options import check_confidence
from .progress import Progress, emit
from .results import AnalysisResult, ComparisonResult


def compare_groups(group_a: Sequence[AnalysisResult | str | os.PathLike],
                   group_b: Sequence[AnalysisResult | str | os.PathLike], *, names: tuple[str, str] | None = None,
                   groups: int = M.uncertainty.DEFAULT_GROUPS, seed: int = 0, confidence: float = 0.95,
                   correction: Correction = "none", progress: Progress | None = None,
                   **analyze_kwargs: Any) -> ComparisonResult:
    """Seed groups: ``group_a[i]`` and ``group_b[i]`` are runs with the same seed (e.g. MLM and hybrid trained with
    seed i), analysed on the same texts. Each pair is compared as :func:`compare` does (paired b - a with a
    text-sampling interval); then, per (task, pooling, layer, metric), the mean of the per-seed differences gets
    a between-seed Student-t interval (mean -+ t_{k-1} sd / sqrt(k) over the k seeds), which includes
    seed-to-seed training variation. Rows also say in how many seeds the difference has the mean's sign
    (``seeds_agree``) and in how many its per-seed interval excludes 0 (``seeds_significant``); ``per_seed`` holds
    each seed's difference, ``per_seed_a`` / ``per_seed_b`` its two values and ``per_seed_low`` /
    ``per_seed_high`` its text-sampling interval, in the order of the groups.

    Each row's ``p`` is the two-sided p-value of the between-seed t (k - 1 degrees of freedom, ``df``);
    ``correction`` (``"none"``, ``"holm"``, ``"bh"``) adjusts them over the family = every difference row of
    this group comparison with a p-value, as :func:`embedgeom.compare` does (``p_adjusted``; ``significant``
    follows it under a correction). ``seeds_significant`` counts the per-seed text-sampling intervals, which
    are not corrected."""
    if len(group_a) != len(group_b) or len(group_a) < 2:
        raise ValueError(f"group_b: expected as many runs as group_a (at least 2 seeds each, paired by position), "
                         f"got {len(group_a)} and {len(group_b)}. Give the runs of each seed in the same order.")
    confidence = check_confidence(confidence)
    correction = check_correction(correction)
    per_seed = []
    for i, (a, b) in enumerate(zip(group_a, group_b, strict=True)):
        emit(progress, "seed pairs", i, len(group_a))
        common = {"seed": seed, "groups": groups, "confidence": confidence, **analyze_kwargs}
        ra, rb = resolve_result(a, **common), resolve_result(b, **common)
        per_seed.append((ra, rb, compare(ra, rb, groups=groups, seed=seed, confidence=confidence)))
    emit(progress, "seed pairs", len(group_a), len(group_a))
    k = len(per_seed)
    diffs = _seed_differences([cmp for _, _, cmp in per_seed], confidence)
    add_p_values(diffs)
    family = apply_correction(diffs, correction, confidence)
    sims = _seed_similarities([cmp for _, _, cmp in per_seed], confidence)
    label_a, label_b = names or (_group_label([ra for ra, _, _ in per_seed]),
                                 _group_label([rb for _, rb, _ in per_seed]))
    return ComparisonResult(label_a, label_b, diffs, sims,
                            {"kind": "groups", "seeds": k, "confidence": confidence, "groups": groups, "seed": seed,
                             "direction": "diff = b - a (second minus first)",
                             "members": {"a": [ra.name for ra, _, _ in per_seed],
                                         "b": [rb.name for _, rb, _ in per_seed]},
                             "protocol": per_seed[0][0].options.get("protocol"), **family,
                             "n": per_seed[0][2].options.get("n")},
                            {"a": {"checkpoint": per_seed[0][0].checkpoint},
                             "b": {"checkpoint": per_seed[0][1].checkpoint}})


#: What identifies one row of a comparison across the seeds of a group.
_ROW_KEY = ("task", "pooling", "layer", "name")


def _seed_differences(per_seed: list[ComparisonResult], confidence: float) -> list[dict]:
    """Per row every seed's comparison has: the mean of the per-seed differences with a between-seed t-interval,
    and how many seeds agree with its sign (and are significant); rows with a non-finite difference are left out."""
    k = len(per_seed)
    tables = [{tuple(r[c] for c in _ROW_KEY): r for r in cmp.differences} for cmp in per_seed]
    common = [kk for kk in tables[0] if all(kk in t for t in tables[1:])]
    diffs = []
    for kk in common:
        rows = [t[kk] for t in tables]
        d = np.array([r["diff"] for r in rows], dtype=np.float64)
        if not np.isfinite(d).all():
            continue
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        low, high, _ = t_interval(mean, sd / math.sqrt(k), k - 1, confidence)
        sign = np.sign(mean)
        diffs.append({**dict(zip(_ROW_KEY, kk, strict=True)), "kind": rows[0]["kind"],
                      "value_a": float(np.mean([r["value_a"] for r in rows])),
                      "value_b": float(np.mean([r["value_b"] for r in rows])), "diff": mean,
                      "stderr": sd / math.sqrt(k), "low": low, "high": high, "significant": not (low <= 0.0 <= high),
                      "n": k, "df": float(k - 1), "seeds": k,
                      "seeds_agree": int((np.sign(d) == sign).sum()) if sign else 0,
                      "seeds_significant": int(sum(bool(r["significant"]) and np.sign(r["diff"]) == sign
                                                   for r in rows)),
                      "per_seed": d.tolist(), "per_seed_a": [float(r["value_a"]) for r in rows],
                      "per_seed_b": [float(r["value_b"]) for r in rows],
                      "per_seed_low": [float(r["low"]) for r in rows],
                      "per_seed_high": [float(r["high"]) for r in rows],
                      **{side: rows[0][side] for side in ("d_a", "d_b")
                         if all(r.get(side) == rows[0].get(side) for r in rows) and side in rows[0]},
                      "method": f"between-seed t-interval over {k} per-seed paired "
                                "differences (includes training variation)"})
    return diffs


def _seed_similarities(per_seed: list[ComparisonResult], confidence: float) -> list[dict]:
    """Per similarity row every seed's comparison has: the mean over seeds with a between-seed t-interval."""
    k = len(per_seed)
    stables = [{tuple(r[c] for c in _ROW_KEY): r for r in cmp.similarity} for cmp in per_seed]
    sims = []
    for kk in [kk for kk in stables[0] if all(kk in t for t in stables[1:])]:
        v = np.array([t[kk]["value"] for t in stables], dtype=np.float64)
        low, high, _ = t_interval(float(v.mean()), float(v.std(ddof=1)) / math.sqrt(k), k - 1, confidence)
        sims.append({**dict(zip(_ROW_KEY, kk, strict=True)), "value": float(v.mean()),
                     "stderr": float(v.std(ddof=1)) / math.sqrt(k), "low": low, "high": high, "n": k,
                     "method": f"mean over {k} seeds, between-seed t-interval"})
    return sims


def _group_label(results: list[AnalysisResult]) -> str:
    """The members' common leading characters (``mlm-seed0``, ``mlm-seed1`` -> ``mlm-seed``) and their count."""
    names = [r.name for r in results]
    n = 0
    while all(len(x) > n and x[n] == names[0][n] for x in names):
        n += 1
    prefix = names[0][:n].rstrip("-_@ ")
    return f"{prefix or names[0]} (x{len(names)})"
