"""Measure: the geometry of one task's embedding sets - every single-set metric of the registry with its jackknife
interval, alignment on the task's positive pairs, the eigenspectrum, a histogram of pairwise cosines - and the
probes of :mod:`embedgeom.probes`, gathered into the rows and arrays of an AnalysisResult. No model code: it
takes vectors (``Embeddings``) and the task's texts and structure (``TextSet``).

Every probe row carries ``chance`` (what a label-blind predictor scores on the same items; definitions in
:mod:`embedgeom.probes`) and ``below_chance`` (the upper end of the row's normal interval at the analysis's
confidence lies below chance); each below-chance row is warned about once (:class:`ProbeBelowChanceWarning`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import metrics as M
from .data import TextSet
from .encoding import Embeddings
from .options import AnalysisOptions
from .postprocess import apply_postprocess
from .probes import (
    ProbeScore,
    classification_probe,
    classification_skip_reason,
    cosine_similarity_probe,
    lexical_probe,
    pair_features,
    regression_probe,
    regression_skip_reason,
    ridge_probe,
)
from .progress import Progress, emit
from .results import array_key

#: Pairwise-cosine histogram: the number of seeded pairs sampled and the number of equal bins, spread between the
#: smallest and the largest sampled cosine (recorded with every result; the edges are saved beside the counts).
HIST_BINS = 64
HIST_PAIRS = 200_000
HIST_RANGE = "data: the smallest to the largest sampled cosine"


def sampled_cosines(take: Callable[[np.ndarray], Any], n: int, seed: int, chunk: int = 4096) -> np.ndarray:
    """Cosines of ``min(HIST_PAIRS, n(n-1)/2)`` pairs i != j drawn uniformly (with replacement) with
    ``numpy.random.default_rng(seed)``; ``take(index)`` returns the rows at a sorted index array, so a set on disk
    is read only where sampled, ``chunk`` pairs at a time."""
    rng = np.random.default_rng(seed)
    m = min(HIST_PAIRS, n * (n - 1) // 2)
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n - 1, size=m)
    j = j + (j >= i)
    out = np.empty(m, dtype=np.float64)
    for a in range(0, m, chunk):
        ii, jj = i[a : a + chunk], j[a : a + chunk]
        rows, where = np.unique(np.concatenate([ii, jj]), return_inverse=True)
        x = np.asarray(take(rows), dtype=np.float64)
        z = x / np.linalg.norm(x, axis=1, keepdims=True)
        out[a : a + len(ii)] = np.clip((z[where[: len(ii)]] * z[where[len(ii) :]]).sum(1), -1.0, 1.0)
    return out


def histogram_of_cosines(cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges: :data:`HIST_BINS` equal bins from the smallest to the largest cosine (a set whose cosines
    all lie in [0.9, 1] is drawn there, not as one spike on [-1, 1]); a set of one cosine value gets bins of width
    1e-4 around it."""
    lo, hi = float(cos.min()), float(cos.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 32e-4, hi + 32e-4
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    return np.histogram(cos, bins=edges)[0].astype(np.int64), edges


def cosine_histogram(x: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the pairwise-cosine histogram of the rows of ``x``: :func:`histogram_of_cosines` of
    the :func:`sampled_cosines` (a set read in blocks passes its own ``take`` to :func:`sampled_cosines`)."""
    return histogram_of_cosines(sampled_cosines(lambda idx: x[idx], len(x), seed))


def probe_rows(task: str, pooling: str, layer: int, scores: list[ProbeScore], arrays: dict,
                confidence: float = 0.95) -> list[dict]:
    """One row per score, with ``below_chance`` at ``confidence`` (the analysis's), each below-chance row warned
    about once (:class:`ProbeBelowChanceWarning`); per-item scores go to ``arrays``."""
    rows = []
    for s in scores:
        rows.append({"task": task, "pooling": pooling, "layer": layer, **s.record(),
                     "below_chance": s.below_chance(confidence)})
        if rows[-1]["below_chance"]:
            warnings.warn(below_chance_message(rows[-1], confidence), ProbeBelowChanceWarning, stacklevel=3)
        if s.per_item is not None:
            arrays[array_key("items", task, pooling, layer, s.probe, s.metric)] = np.asarray(s.per_item)
    return rows


class ProbeNotRunWarning(UserWarning):
    """A task has labels or scored pairs, but a probe on them cannot run (the warning says why)."""


class ProbeBelowChanceWarning(UserWarning):
    """A probe scored below what a label-blind predictor gets on the same items: the upper end of its interval
    lies below its chance level (the warning names the task, pooling, layer, value and chance)."""


def below_chance_message(row: dict, confidence: float) -> str:
    """The one-line warning for a below-chance probe row."""
    from scipy.stats import norm

    upper = row["value"] + float(norm.ppf(0.5 + confidence / 2)) * row["stderr"]
    return (f"{row['task']}/{row['pooling']}/layer {row['layer']}: the {row['probe']} probe's {row['metric']} is "
            f"{row['value']:.4g} (upper end of its {confidence * 100:.4g}% interval {upper:.4g}), below chance "
            f"{row['chance']:.4g} (what a label-blind predictor scores on the same {row['n']} items). A probe "
            "below chance usually means a label leak through the folds (e.g. duplicates with opposite labels), a "
            "collapsed embedding, or too few items; do not read it as a difference between models.")


def probes_not_run(ts: TextSet) -> dict[str, str]:
    """Probe -> why it cannot run on this task's labels (one line each); empty when every probe the task's
    structure calls for can run."""
    out = {}
    if ts.labels is not None and ts.label_task == "regression":
        why = regression_skip_reason(ts.labels)
        if why:
            out["regression"] = why
    elif ts.labels is not None and (ts.labels >= 0).all():
        why = classification_skip_reason(ts.labels)
        if why:
            out["classification"] = why
    if ts.pairs is not None and ts.pair_labels is not None and ts.pair_task == "classification":
        why = classification_skip_reason(ts.pair_labels, "pair labels")
        if why:
            out["pair classification"] = why
    return out


def run_probes(ts: TextSet, x: np.ndarray, seed: int, lexical: bool,
               skipped: dict[str, str] | None = None, probe_c: float | str = 1.0) -> list[ProbeScore]:
    """Probes for one embedding set (rows = ts.texts); those :func:`probes_not_run` names are skipped (pass them as
    ``skipped`` when they are already known for the task). Single-text labels are a classification probe, or a
    ridge regression probe when ``ts.label_task == "regression"``; ``probe_c`` is the logistic probes' C (a
    number, or ``"nested"``: :func:`embedgeom.probes.classification_probe`)."""
    out: list[ProbeScore] = []
    skipped = probes_not_run(ts) if skipped is None else skipped
    if ts.labels is not None and ts.label_task == "regression":
        if "regression" not in skipped:
            out += regression_probe(x, ts.labels, seed=seed)
    elif ts.labels is not None and (ts.labels >= 0).all() and "classification" not in skipped:
        out += classification_probe(x, ts.labels, seed=seed, c=probe_c)
    if ts.pairs is not None and ts.pair_labels is not None:
        u, v = x[ts.pairs[:, 0]], x[ts.pairs[:, 1]]
        if ts.pair_task == "classification" and "pair classification" not in skipped:
            two = len(np.unique(ts.pair_labels)) == 2
            out += classification_probe(pair_features(u, v), ts.pair_labels, seed=seed,
                                        positive=1 if two else None, pairs=ts.pairs, c=probe_c)
        elif ts.pair_task == "regression":
            out.append(cosine_similarity_probe(u, v, ts.pair_labels, seed=seed))
            if len(ts.pair_labels) >= 10:
                out.append(ridge_probe(pair_features(u, v), ts.pair_labels, seed=seed, pairs=ts.pairs))
    if lexical:
        lex = lexical_probe(x, list(ts.texts), seed=seed)
        if lex is not None:
            out.append(lex)
            sem = next((s for s in out if s.metric == "accuracy"), None)
            if sem is not None:
                out.append(ProbeScore("gap", "semantic_minus_lexical", sem.value - lex.value,
                                      math.sqrt(sem.stderr**2 + lex.stderr**2), lex.n,
                                      "task probe accuracy minus lexical balanced accuracy"))
    return out


def metric_rows(base: dict, x: np.ndarray, cfg: AnalysisOptions) -> list[dict]:
    """Every requested metric with its interval; a metric undefined on this set (e.g. a spectral metric of a
    constant set) becomes a NaN row that says why, instead of stopping the analysis."""
    kw = {"confidence": cfg.confidence, "groups": min(cfg.groups, len(x)), "seed": cfg.seed}
    try:
        cis = M.confidence_intervals(list(cfg.metrics), x, **kw)
        return [{**base, "metric": name, **ci.as_dict()} for name, ci in cis.items()]
    except ValueError:
        pass
    rows = []
    for name in cfg.metrics:
        try:
            ci = M.confidence_interval(name, x, **kw)
            rows.append({**base, "metric": name, **ci.as_dict()})
        except ValueError as err:
            rows.append({**base, "metric": name, "value": math.nan, "stderr": math.nan, "low": math.nan,
                         "high": math.nan, "n": len(x), "confidence": cfg.confidence,
                         "method": f"undefined: {str(err).split('. ')[0]}", "replicates": 0})
    return rows


@dataclass
class Collected:
    """What an analysis gathers task by task for its AnalysisResult."""

    tasks: dict[str, dict] = field(default_factory=dict)
    metric_rows: list[dict] = field(default_factory=list)
    probe_rows: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def measure_task(task: str, ts: TextSet, emb: Embeddings, last_layer: int, cfg: AnalysisOptions,
                  progress: Progress | None, out: Collected) -> None:
    """One task: its card and structure arrays, then per (pooling, layer) its geometry and probes."""
    out.tasks[task] = {**ts.card(), "items": "texts", "n_items": emb.n,
                       "encode": {k: v for k, v in emb.meta.items() if k not in ("model_spec",)}}
    for what in ("labels", "pairs", "pair_labels", "positives"):
        val = getattr(ts, what)
        if val is not None:
            out.arrays[array_key("struct", task, what)] = np.asarray(val)
    if cfg.probes:
        skipped = probes_not_run(ts)
        out.tasks[task]["probes_not_run"] = skipped
        for probe, why in skipped.items():
            warnings.warn(f"{task}: the {probe} probe is not run: {why}", ProbeNotRunWarning, stacklevel=2)
    keys = list(emb.vectors)
    for k_i, (pooling, layer) in enumerate(keys):
        emit(progress, f"metrics {task}", k_i, len(keys))
        x = apply_postprocess(cfg.postprocess, emb.vectors[(pooling, layer)])  # fitted on this set; cache stays raw
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            measure_geometry({"task": task, "pooling": pooling, "layer": layer}, ts, x, cfg, out)
        for w in {(w.category, str(w.message)): w for w in caught}.values():  # once each, naming the set
            warnings.warn(f"{task}/{pooling}/layer {layer}: {w.message}", w.category, stacklevel=2)
        if cfg.probes:
            emit(progress, f"probes {task}", k_i, len(keys))
            scores = run_probes(ts, x, cfg.seed, lexical=layer == last_layer, skipped=skipped,
                                probe_c=cfg.probe_c)
            out.probe_rows += probe_rows(task, pooling, layer, scores, out.arrays, cfg.confidence)
            emit(progress, f"probes {task}", k_i + 1, len(keys))
    emit(progress, f"metrics {task}", len(keys), len(keys))


def measure_geometry(base: dict, ts: TextSet, x: np.ndarray, cfg: AnalysisOptions, out: Collected) -> None:
    """One embedding set (``base``: its task, pooling and layer): every metric with its interval, alignment on the
    task's positive pairs, the eigenspectrum, a histogram of pairwise cosines, and the embeddings when saved."""
    task, pooling, layer = base["task"], base["pooling"], base["layer"]
    out.metric_rows += metric_rows(base, x, cfg)
    if len(ts.positives) >= 2:
        p = ts.positives
        ci = M.confidence_interval("alignment", x[p[:, 0]], x[p[:, 1]], confidence=cfg.confidence)
        out.metric_rows.append({**base, "metric": "alignment", **ci.as_dict()})
    out.arrays[array_key("spectrum", task, pooling, layer)] = M.eigenspectrum(x)
    counts, edges = cosine_histogram(x, cfg.seed)
    out.arrays[array_key("hist", task, pooling, layer)] = counts
    out.arrays[array_key("hist_edges", task, pooling, layer)] = edges
    if cfg.save_embeddings:
        out.arrays[array_key("emb", task, pooling, layer)] = x
