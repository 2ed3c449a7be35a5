"""Analyze: orchestration only - no printing, no plotting, no measuring of its own.

analyze(checkpoint, data) reads every data spec (before the model), loads the encoder once, encodes each task's
texts once (every pooling and layer in one pass, cached on disk) and hands the vectors to
:mod:`embedgeom.measure`; analyze_checkpoints does that for a trainer run's checkpoints; resolve_result turns a
checkpoint or a saved directory into a result for :mod:`embedgeom.comparison`. The reference study's protocol
runs through :mod:`embedgeom.reference.paper`. Options: :class:`embedgeom.options.AnalysisOptions`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .data import TextSet, load_texts
from .devices import resolve_device
from .embedding_cache import cache_writes
from .encoding import encode, model_kind
from .loading import Encoder, load_encoder, trainer_checkpoints
from .measure import HIST_BINS, HIST_PAIRS, HIST_RANGE, Collected, measure_task
from .options import AnalysisOptions, resolve_options
from .pooling import get_pooler, pooler_names
from .progress import Progress, emit
from .reference.paper import (
    PAPER_MAX_SAMPLES,
    PAPER_METRICS,
    PAPER_POOLINGS,
    PaperItems,
    analyze_paper_task,
    paper_items,
)
from .reference.protocols import PAPER_DEVIATIONS, PAPER_PROTOCOL_DEPARTURES
from .results import AnalysisResult, reproducibility_card
from .storage import unique_name


def analyze(checkpoint: str | os.PathLike | Encoder, data: str | Sequence[str] | None = None, *,
            progress: Progress | None = None, name: str | None = None, options: AnalysisOptions | None = None,
            **kwargs: Any) -> AnalysisResult:
    """Measure the embedding geometry of ``checkpoint`` on each data spec in ``data``.

    ``checkpoint``: anything :func:`embedgeom.load_encoder` accepts (a path, a hub id, or a model in memory: a
    ``SentenceTransformer`` or a ``(PreTrainedModel, tokenizer)`` pair), or a loaded Encoder. ``data``: specs as in
    :func:`embedgeom.data.load_texts` (comma-separated string or list; default ``sample:bbc,sample:lee``). Every
    other option is a field of :class:`~embedgeom.options.AnalysisOptions`, given as a keyword or as ``options=``
    (keywords override it): ``poolings`` (``"all"`` = mean, cls, max, attention for an encoder, mean, max, last for
    a decoder-only model; ``native`` for sentence-transformers checkpoints), ``prompt`` (prepended to every
    text), ``layers`` (indices or ``"all"``), ``max_texts`` / ``seed`` (seeded
    subsample per task), ``protocol`` (``"paper"`` reproduces the reference study's choices, see
    :mod:`embedgeom.reference.protocols`; ``"both"`` adds them as ``result.paper``), ``metrics``, ``probes``,
    ``groups`` / ``confidence`` (jackknife intervals), ``device``, ``dtype``, ``batch_size``, ``max_length``,
    ``special_tokens``, ``cache``, ``glue_dir``, ``save_embeddings``. ``progress(stage, done, total)`` is called as
    work proceeds. ``name``: the model's label in tables, comparisons and figures (default: from the checkpoint
    path). Returns an :class:`~embedgeom.results.AnalysisResult` whose ``options`` record every option.
    """
    _check_name(name)
    cfg = resolve_options(options, data, kwargs)
    with cache_writes(cfg.cache is not False):  # cache=False (--no-cache): nothing is written under the cache root
        from .distributed import current

        if current().world > 1 or cfg.spill:  # torchrun (texts sharded) or --spill: vectors measured from disk
            if cfg.protocol != "default":
                raise ValueError(f"protocol: a distributed or spilled analysis runs the default protocol, got "
                                 f"{cfg.protocol!r}. Run --protocol paper in one process without --spill.")
            from .distributed import analyze_spilled

            return analyze_spilled(checkpoint, cfg, progress, name)
        if cfg.protocol == "paper" and cfg.postprocess != "none":
            raise ValueError(f"postprocess: the reference protocol measures the vectors as its code does, got "
                             f"postprocess={cfg.postprocess!r}. Use --protocol default (or both: the default numbers "
                             "are post-processed, the paper ones are not).")
        if cfg.protocol == "both":
            return _analyze_both(checkpoint, cfg, progress, name)
        if cfg.protocol == "paper":
            return _analyze_paper(checkpoint, cfg, progress, name)
        if not isinstance(checkpoint, Encoder):
            resolve_device(cfg.device)  # a bad --device fails before any data or model is read
        text_sets = _load_text_sets(cfg, progress)
        emit(progress, "load model", 0, 1)
        enc = _encoder(checkpoint, cfg)
        emit(progress, "load model", 1, 1)
        cfg = poolings_for_model(cfg, enc)
        out = Collected()
        used: set[str] = set()
        for spec, ts in zip(cfg.data, text_sets, strict=True):
            task = unique_name(ts.name, used)
            emit(progress, f"encode {spec}", 0, ts.n)  # the stage is announced before its first batch ends
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                emb = encode(enc, list(ts.texts), poolings=cfg.poolings, layers=cfg.layers, batch_size=cfg.batch_size,
                             max_length=cfg.max_length, special_tokens=cfg.special_tokens, cache=cfg.cache,
                             prompt=cfg.prompt, progress=lambda d, t, s=spec: emit(progress, f"encode {s}", d, t))
            _rewarn(caught, task, enc)  # from here, so that the warnings name analyze's caller
            measure_task(task, ts, emb, enc.num_layers, cfg, progress, out)
        return AnalysisResult(enc.card(), out.tasks, _options(cfg), out.metric_rows, out.probe_rows, out.arrays,
                              reproducibility_card(cfg.seed), name.strip() if name else "")


def _check_name(name: str | None) -> None:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty label such as 'MiniLM', got {name!r}. Omit it to use the "
                         "checkpoint's directory name.")


def _analyze_both(checkpoint: str | os.PathLike | Encoder, cfg: AnalysisOptions, progress: Progress | None,
                  name: str | None) -> AnalysisResult:
    """The default analysis, with the reference protocol's as its companion (``result.paper``; all of each source's
    first rows, as the reference protocol reads them, whatever ``max_texts``)."""
    enc = _encoder(checkpoint, cfg)
    paper = analyze(enc, progress=progress, name=name, options=cfg.replace(protocol="paper", max_texts=None,
                                                                           postprocess="none"))
    res = analyze(enc, progress=progress, name=name, options=cfg.replace(protocol="default"))
    res.paper = paper
    return res


def _load_text_sets(cfg: AnalysisOptions, progress: Progress | None) -> list[TextSet]:
    """Every data spec, read (and checked) before the model is loaded."""
    text_sets = []
    for spec in cfg.data:
        emit(progress, f"load {spec}", 0, 1)
        text_sets.append(load_texts(spec, max_texts=cfg.max_texts, seed=cfg.seed, glue_dir=cfg.glue_dir))
        emit(progress, f"load {spec}", 1, 1)
    return text_sets


def _options(cfg: AnalysisOptions) -> dict[str, Any]:
    """The default protocol's recorded options: every option, and the definitions of what was measured."""
    return {**cfg.record(), "protocol": "default", "protocol_deviations": PAPER_DEVIATIONS,
            "metric_definitions": {n: {"description": M.REGISTRY[n].description,
                                       "options": dict(M.REGISTRY[n].kwargs),
                                       "reference": M.REGISTRY[n].reference,
                                       "higher_is_better": M.REGISTRY[n].higher_is_better}
                                   for n in (*cfg.metrics, "alignment")},
            "pooling_definitions": {p: get_pooler(p).definition for p in pooler_names()},
            "histogram": {"bins": HIST_BINS, "range": HIST_RANGE, "pairs": HIST_PAIRS}}


def analyze_checkpoints(run_dir: str | os.PathLike, checkpoints: str | Sequence[int] = "all", *,
                        name: str | None = None, progress: Progress | None = None,
                        options: AnalysisOptions | None = None, **kwargs: Any) -> list[AnalysisResult]:
    """Analyse a trainer run's checkpoints (``"all"``, ``"every:K"``, ``"last"`` or a list of steps; see
    :func:`embedgeom.loading.trainer_checkpoints`) on the same texts with the same seed and options: one
    AnalysisResult per checkpoint, oldest first, each labelled ``<run>@<step>`` and carrying
    ``checkpoint["trajectory"] = {"run", "step", "tokens", "objective"}`` so reports draw metrics against training
    step. ``options`` / ``kwargs``: as for :func:`analyze` (``data`` among them). Under torchrun every rank
    takes part in each checkpoint's analysis and rank 0 gets the results (the other ranks an empty list)."""
    cfg = resolve_options(options, None, kwargs)  # every option checked before any checkpoint is read
    run = Path(run_dir).expanduser()
    label = name.strip() if isinstance(name, str) and name.strip() else run.resolve().name
    picked = trainer_checkpoints(run, checkpoints)
    out = []
    for i, ck in enumerate(picked):
        emit(progress, "checkpoints", i, len(picked))
        res = analyze(ck.path, name=f"{label}@{ck.step}", progress=progress, options=cfg)
        if res is None:  # a torchrun rank other than 0: rank 0 holds the results
            continue
        res.checkpoint["trajectory"] = {"run": label, "step": ck.step, "tokens": ck.tokens,
                                        "objective": ck.objective}
        out.append(res)
    emit(progress, "checkpoints", len(picked), len(picked))
    return out


def _encoder(checkpoint: str | os.PathLike | Encoder, cfg: AnalysisOptions) -> Encoder:
    """A loaded Encoder as it is; a path, hub id or model in memory (a SentenceTransformer or a (PreTrainedModel,
    tokenizer) pair) loaded with the options' device, dtype and max length."""
    if isinstance(checkpoint, Encoder):
        return checkpoint
    return load_encoder(checkpoint, device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_length)


def poolings_for_model(cfg: AnalysisOptions, enc: Encoder) -> AnalysisOptions:
    """The options with the poolings this model is analysed with: for a model whose kind is not an encoder's (a
    decoder-only model), the default poolings - what ``"all"`` means for an encoder - mean ``"all"`` for its kind
    (mean, max, last); any other set is kept, and a pooling that does not apply is refused by encode()."""
    kind = model_kind(enc)
    if kind != "encoder" and tuple(cfg.poolings) == pooler_names("encoder", include_native=False):
        return cfg.replace(poolings=pooler_names(kind, include_native=False))
    return cfg


def _rewarn(caught: list, task: str, enc: Encoder) -> None:
    """Re-issue warnings caught while encoding a task, saying which model and task they are about."""
    for w in caught:
        warnings.warn(f"{task} ({Path(enc.spec).name or enc.spec}): {w.message}", w.category, stacklevel=3)


def _analyze_paper(checkpoint: str | os.PathLike | Encoder, cfg: AnalysisOptions, progress: Progress | None,
                   name: str | None) -> AnalysisResult:
    """The reference study's protocol (:mod:`embedgeom.reference.paper`): the first ``max_texts`` (default 2,000)
    rows of each source in order, its own tokenisation, forward pass, poolings, metrics and probes; point values
    only."""
    if not isinstance(checkpoint, Encoder):
        resolve_device(cfg.device)
    max_samples = cfg.max_texts or PAPER_MAX_SAMPLES
    items = []
    for spec in cfg.data:
        emit(progress, f"load {spec}", 0, 1)
        items.append(paper_items(spec, max_samples=max_samples, glue_dir=cfg.glue_dir))
        emit(progress, f"load {spec}", 1, 1)
    enc = _encoder(checkpoint, cfg)
    arrays: dict[str, np.ndarray] = {}
    metric_rows: list[dict] = []
    probe_rows: list[dict] = []
    tasks: dict[str, dict] = {}
    used: set[str] = set()
    for spec, it in zip(cfg.data, items, strict=True):
        task = unique_name(it.name, used)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = analyze_paper_task(enc, it, seed=cfg.seed, batch_size=cfg.batch_size, task=task, probes=cfg.probes,
                                   prompt=cfg.prompt,
                                   progress=lambda d, t, s=spec: emit(progress, f"encode {s}", d, t))
        _rewarn(caught, task, enc)
        metric_rows += r.metric_rows
        probe_rows += r.probe_rows
        arrays.update({k: v for k, v in r.arrays.items() if cfg.save_embeddings or not k.startswith("emb|")})
        tasks[task] = {**r.card, "items": "joined pairs" if it.pair else "texts", "n_texts": it.n,
                       "content_hash": _items_hash(it)}
    options = {**cfg.record(), "max_texts": max_samples, "poolings": list(PAPER_POOLINGS), "protocol": "paper",
               "protocol_departures": PAPER_PROTOCOL_DEPARTURES, "protocol_deviations": PAPER_DEVIATIONS,
               "not_applicable": ["layers", "dtype", "max_length", "special_tokens", "cache", "metrics", "groups",
                                  "confidence"],
               "metric_definitions": {m: "embedgeom/reference/PROTOCOL.md" for m in PAPER_METRICS}}
    return AnalysisResult(enc.card(), tasks, options, metric_rows, probe_rows, arrays,
                          reproducibility_card(cfg.seed), name.strip() if name else "")


def _items_hash(items: PaperItems) -> str:
    """Content hash of the reference protocol's items (texts in order and their labels), for compare()."""
    import hashlib

    h = hashlib.sha256()
    for t in items.texts:
        h.update(t.encode("utf-8", errors="surrogatepass") + b"\x00")
    h.update(b"|" if items.labels is None else np.ascontiguousarray(items.labels).tobytes())
    return h.hexdigest()




def resolve_result(x: Any, *, progress: Progress | None = None, options: AnalysisOptions | None = None,
                   **kwargs: Any) -> AnalysisResult:
    """``x`` as an AnalysisResult: itself, a saved analysis directory (loaded), or a checkpoint (analysed with
    ``options`` / ``kwargs`` as :func:`analyze` takes them)."""
    if isinstance(x, AnalysisResult):
        return x
    if not isinstance(x, (str, os.PathLike)):  # a loaded Encoder or a model in memory
        return analyze(x, progress=progress, options=options, **kwargs)
    path = Path(os.fspath(x)).expanduser()
    if (path / "result.json").is_file():
        return AnalysisResult.load(path)
    return analyze(x, progress=progress, options=options, **kwargs)
