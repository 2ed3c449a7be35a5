"""Measure one embedding set read block by block - a precomputed vectors file, or the shards of vectors that the
processes of a distributed analysis spilled to disk - into the rows and arrays of an AnalysisResult, as
:func:`embedgeom.measure.measure_geometry` and the probes do for an in-memory set.

What stays bounded: the metrics (:func:`embedgeom.metrics.tiled.streamed_measure`), the eigenspectrum and the
cosine histogram read blocks or sampled rows. What does not: the probes (scikit-learn needs the matrix) and the
saved embeddings read the set whole; both run on the main process only.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import metrics as M
from .data import TextSet
from .measure import Collected, histogram_of_cosines, probe_rows, probes_not_run, run_probes, sampled_cosines
from .metrics.tiled import DEFAULT_BLOCK, RowSource, streamed_measure, streamed_moments
from .options import AnalysisOptions
from .postprocess import fit_from_moments, parse_postprocess
from .progress import Progress, emit
from .results import array_key


def postprocessed(source: RowSource, spec: str, *, block: int = DEFAULT_BLOCK, distributed: bool = False
                  ) -> RowSource:
    """``source`` with the ``--postprocess`` transform applied to every block it reads, fitted as
    :func:`embedgeom.postprocess.fit_postprocess` fits it (the set's float64 mean and population covariance), from
    moments streamed in one pass (merged across ranks when ``distributed``)."""
    if parse_postprocess(spec).kind == "none":
        return source
    m = streamed_moments(source, block=block, distributed=distributed)
    pp = fit_from_moments(spec, m.n, m.mean.cpu().numpy(), m.m2.cpu().numpy() / m.n)
    d = source.d if pp.matrix is None else int(pp.matrix.shape[1])
    return RowSource(source.n, d, lambda a, b: pp.transform(source.read(a, b)),
                     None if source.take is None else (lambda idx: pp.transform(source.take(idx))))


def measure_source(task: str, ts: TextSet, source: RowSource, pooling: str, layer: int, cfg: AnalysisOptions,
                   out: Collected, progress: Progress | None, *, block: int = DEFAULT_BLOCK,
                   distributed: bool = False, main: bool = True, lexical: bool = False, device: Any = "cpu") -> None:
    """One embedding set (rows = ``ts``'s items): every metric of ``cfg`` with its interval, alignment on the
    positives, the eigenspectrum, the cosine histogram, the probes and (``cfg.save_embeddings``) the vectors.
    ``distributed``: the metric work is shared by the ranks (every rank calls this with the same source); only
    ``main`` fills ``out`` with probes and arrays that need the whole set. ``device``: where the blocks are
    measured (a GPU for large sets; the numbers are the same to float rounding)."""
    base = {"task": task, "pooling": pooling, "layer": layer}
    source = postprocessed(source, cfg.postprocess, block=block, distributed=distributed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        intervals, eigenvalues = streamed_measure(
            list(cfg.metrics), source, confidence=cfg.confidence, groups=min(cfg.groups, source.n), seed=cfg.seed,
            block=block, distributed=distributed, progress=lambda d, t: emit(progress, f"metrics {task}", d, t),
            device=device)
    if not main:
        return
    for w in {(w.category, str(w.message)): w for w in caught}.values():
        warnings.warn(f"{task}/{pooling}/layer {layer}: {w.message}", w.category, stacklevel=3)
    out.metric_rows += [{**base, "metric": m, **ci.as_dict()} for m, ci in intervals.items()]
    if len(ts.positives) >= 2:
        p = ts.positives
        ci = M.confidence_interval("alignment", source.take(p[:, 0]), source.take(p[:, 1]),
                                   confidence=cfg.confidence)
        out.metric_rows.append({**base, "metric": "alignment", **ci.as_dict()})
    out.arrays[array_key("spectrum", task, pooling, layer)] = eigenvalues
    counts, edges = histogram_of_cosines(sampled_cosines(source.take, source.n, cfg.seed))
    out.arrays[array_key("hist", task, pooling, layer)] = counts
    out.arrays[array_key("hist_edges", task, pooling, layer)] = edges
    x: Any = None
    if cfg.probes and (ts.labels is not None or ts.pairs is not None or lexical):
        emit(progress, f"probes {task}", 0, 1)
        skipped = out.tasks.setdefault(task, {}).setdefault("probes_not_run", probes_not_run(ts))
        x = np.asarray(source.read(0, source.n))
        scores = run_probes(ts, x, cfg.seed, lexical=lexical, skipped=skipped, probe_c=cfg.probe_c)
        out.probe_rows += probe_rows(task, pooling, layer, scores, out.arrays, cfg.confidence)
        emit(progress, f"probes {task}", 1, 1)
    if cfg.save_embeddings:
        out.arrays[array_key("emb", task, pooling, layer)] = x if x is not None else np.asarray(
            source.read(0, source.n))
