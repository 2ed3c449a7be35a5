"""analyze() and compare(): orchestration only - no printing, no plotting.

analyze(checkpoint, data) loads the encoder once, encodes each task's texts once (every pooling and layer in
one pass, cached on disk), and measures per (task, pooling, layer): every single-set metric of the REGISTRY
with a jackknife interval, alignment on the task's positive pairs, the eigenspectrum, a histogram of pairwise
cosines, and the probes of :mod:`embedgeom.probes`. compare(a, b) turns two analyses of the same texts into
paired differences with intervals, plus CKA and k-NN overlap between the two models.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .data import TextSet, load_texts
from .embedding_cache import cache_writes
from .encoding import Embeddings, encode
from .loading import COMPUTE_DTYPES, Encoder, load_encoder, resolve_device, trainer_checkpoints
from .metrics.jackknife import delete_group_replicates, jackknife_stderr, t_interval
from .options import check_bool, check_choice, check_confidence, check_groups, check_int, check_seed, parse_layers
from .paper import PAPER_MAX_SAMPLES, PAPER_METRICS, PAPER_POOLINGS, PaperItems, analyze_paper_task, paper_items
from .pooling import ALL_POOLINGS, POOLINGS
from .probes import (
    ProbeScore,
    classification_probe,
    cosine_similarity_probe,
    lexical_probe,
    pair_features,
    ridge_probe,
)
from .protocols import PAPER_DEVIATIONS, PAPER_PROTOCOL_DEPARTURES, PROTOCOL_CHOICES
from .results import AnalysisResult, ComparisonResult, array_key, reproducibility_card
from .storage import unique_name

#: Single-set metrics measured by default (every "set" metric of the registry).
SET_METRICS: tuple[str, ...] = M.names("set")
HIST_BINS = 50
HIST_PAIRS = 200_000
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AnalyzeConfig:
    """Every option of analyze(); recorded in the result."""

    data: tuple[str, ...] = ("sample:wiki",)
    poolings: tuple[str, ...] = POOLINGS
    layers: str | tuple[int, ...] = (-1,)
    max_texts: int | None = None
    seed: int = 0
    protocol: str = "default"
    metrics: tuple[str, ...] = SET_METRICS
    probes: bool = True
    groups: int = M.uncertainty.DEFAULT_GROUPS
    confidence: float = 0.95
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    max_length: int | None = None
    special_tokens: str = "include"
    cache: bool | str = True
    glue_dir: str | None = None
    save_embeddings: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _as_tuple(v: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(s.strip() for s in v.split(",") if s.strip())
    return tuple(v)


def _config(data: Any, poolings: Any, layers: Any, metrics: Any, **kw: Any) -> AnalyzeConfig:
    """Validate every option (one clear error naming it) and freeze them into the recorded config."""
    if not isinstance(data, (str, Sequence)) or not all(isinstance(d, str) for d in _as_tuple(data)):
        raise ValueError(f"data: expected data specs as a comma-separated string or a list of strings, got "
                         f"{data!r}. Pass e.g. 'glue:sst2,sample:wiki'.")
    data_t = _as_tuple(data)
    if not data_t:
        raise ValueError("data: expected at least one data spec (e.g. glue:sst2 or sample:wiki), got none.")
    pool_t = POOLINGS if poolings in ("all", None) else _as_tuple(poolings)
    if not pool_t:
        raise ValueError(f"poolings: expected names from {', '.join(ALL_POOLINGS)} or 'all', got none.")
    for p in pool_t:
        check_choice(p, "poolings", (*ALL_POOLINGS, "all"))
    layers = parse_layers(layers)
    met_t = SET_METRICS if metrics is None else _as_tuple(metrics)
    for m in met_t:
        info = M.get_metric(m)
        if info.kind != "set":
            raise ValueError(f"metrics: expected single-set metrics {SET_METRICS}, got {m!r} ({info.kind}; alignment "
                             "is computed from each task's positives and cross metrics by compare()).")
    check_choice(kw.get("protocol", "default"), "protocol", PROTOCOL_CHOICES)
    kw["max_texts"] = check_int(kw.get("max_texts"), "max_texts", minimum=2, optional=True,
                                fix="Omit it (--max-texts) to use every item.")
    kw["seed"] = check_seed(kw.get("seed", 0))
    kw["groups"] = check_groups(kw.get("groups", M.uncertainty.DEFAULT_GROUPS))
    kw["confidence"] = check_confidence(kw.get("confidence", 0.95))
    kw["batch_size"] = check_int(kw.get("batch_size"), "batch_size", minimum=1, optional=True,
                                 fix="Omit it for the default (32 on CPU, 128 on GPU).")
    kw["max_length"] = check_int(kw.get("max_length"), "max_length", minimum=2, optional=True,
                                 fix="Omit it to use the model's limit.")
    check_choice(kw.get("special_tokens", "include"), "special_tokens", ("include", "exclude"))
    check_choice(kw.get("dtype", "auto"), "dtype", COMPUTE_DTYPES)
    for flag in ("probes", "save_embeddings"):
        check_bool(kw.get(flag, True), flag)
    return AnalyzeConfig(data=data_t, poolings=pool_t, layers=layers, metrics=met_t, **kw)


def _emit(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def _cosine_histogram(x: np.ndarray, seed: int) -> np.ndarray:
    n = len(x)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    m = min(HIST_PAIRS, n * (n - 1) // 2)
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n - 1, size=m)
    j = j + (j >= i)
    cos = np.clip((z[i] * z[j]).sum(1), -1.0, 1.0)
    counts, _ = np.histogram(cos, bins=HIST_BINS, range=(-1.0, 1.0))
    return counts.astype(np.int64)


def _probe_rows(task: str, pooling: str, layer: int, scores: list[ProbeScore], arrays: dict) -> list[dict]:
    rows = []
    for s in scores:
        rows.append({"task": task, "pooling": pooling, "layer": layer, **s.record()})
        if s.per_item is not None:
            arrays[array_key("items", task, pooling, layer, s.probe, s.metric)] = np.asarray(s.per_item)
    return rows


def _run_probes(ts: TextSet, x: np.ndarray, seed: int, lexical: bool) -> list[ProbeScore]:
    """Probes for one embedding set (rows = ts.texts)."""
    out: list[ProbeScore] = []
    if ts.labels is not None and (ts.labels >= 0).all() and len(np.unique(ts.labels)) > 1:
        out += classification_probe(x, ts.labels, seed=seed)
    if ts.pairs is not None and ts.pair_labels is not None:
        u, v = x[ts.pairs[:, 0]], x[ts.pairs[:, 1]]
        if ts.pair_task == "classification" and len(np.unique(ts.pair_labels)) > 1:
            two = len(np.unique(ts.pair_labels)) == 2
            out += classification_probe(pair_features(u, v), ts.pair_labels, seed=seed,
                                        positive=1 if two else None, pairs=ts.pairs)
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


def _metric_rows(base: dict, x: np.ndarray, cfg: AnalyzeConfig) -> list[dict]:
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


def analyze(
    checkpoint: str | os.PathLike | Encoder,
    data: str | Sequence[str] = ("sample:wiki",),
    *,
    poolings: str | Sequence[str] = "all",
    layers: str | int | Sequence[int] = (-1,),
    max_texts: int | None = None,
    seed: int = 0,
    protocol: str = "default",
    metrics: Sequence[str] | None = None,
    probes: bool = True,
    groups: int = M.uncertainty.DEFAULT_GROUPS,
    confidence: float = 0.95,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    max_length: int | None = None,
    special_tokens: str = "include",
    cache: bool | str = True,
    glue_dir: str | os.PathLike | None = None,
    save_embeddings: bool = True,
    progress: Progress | None = None,
    name: str | None = None,
) -> AnalysisResult:
    """Measure the embedding geometry of ``checkpoint`` on each data spec in ``data``.

    ``checkpoint``: anything :func:`embedgeom.load_encoder` accepts, or a loaded Encoder. ``data``: specs as
    in :func:`embedgeom.data.load_texts` (comma-separated string or list). ``poolings``: ``"all"`` (mean,
    cls, max, attention) or a subset (``native`` for sentence-transformers checkpoints); ``layers``: hidden
    layer indices or ``"all"`` (a layer profile). ``max_texts``/``seed``: seeded subsample per task.
    ``protocol="paper"`` reproduces the reference study's choices (see :mod:`embedgeom.protocols`).
    Intervals: jackknife with ``groups`` groups at ``confidence``. ``progress(stage, done, total)`` is called
    as work proceeds. ``name``: the model's label in tables, comparisons and figures (default: from the
    checkpoint path). Returns an :class:`~embedgeom.results.AnalysisResult`.
    """
    _check_name(name)
    cfg = _config(data, poolings, layers, metrics, max_texts=max_texts, seed=seed, protocol=protocol,
                  probes=probes, groups=groups, confidence=confidence, device=device, dtype=dtype,
                  batch_size=batch_size, max_length=max_length, special_tokens=special_tokens,
                  cache=cache if isinstance(cache, bool) else str(cache),
                  glue_dir=None if glue_dir is None else str(glue_dir), save_embeddings=save_embeddings)
    with cache_writes(cfg.cache is not False):  # cache=False (--no-cache): nothing is written under the cache root
        if cfg.protocol == "both":
            return _analyze_both(checkpoint, cfg, progress, name)
        if cfg.protocol == "paper":
            return _analyze_paper(checkpoint, cfg, progress, name)
        if not isinstance(checkpoint, Encoder):
            resolve_device(cfg.device)  # a bad --device fails before any data or model is read
        text_sets = _load_text_sets(cfg, progress)
        enc = _encoder(checkpoint, cfg)
        out = _Collected()
        used: set[str] = set()
        for spec, ts in zip(cfg.data, text_sets, strict=True):
            task = unique_name(ts.name, used)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                emb = encode(enc, list(ts.texts), poolings=cfg.poolings, layers=cfg.layers, batch_size=cfg.batch_size,
                             max_length=cfg.max_length, special_tokens=cfg.special_tokens, cache=cfg.cache,
                             progress=lambda d, t, s=spec: _emit(progress, f"encode {s}", d, t))
            _rewarn(caught, task, enc)  # from here, so that the warnings name analyze's caller
            _measure_task(task, ts, emb, enc.num_layers, cfg, progress, out)
        return AnalysisResult(enc.card(), out.tasks, _options(cfg), out.metric_rows, out.probe_rows, out.arrays,
                              reproducibility_card(cfg.seed), name.strip() if name else "")


def _check_name(name: str | None) -> None:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty label such as 'MiniLM', got {name!r}. Omit it to use the "
                         "checkpoint's directory name.")


def _analyze_both(checkpoint: str | os.PathLike | Encoder, cfg: AnalyzeConfig, progress: Progress | None,
                  name: str | None) -> AnalysisResult:
    """The default analysis, with the reference protocol's as its companion (``result.paper``)."""
    enc = _encoder(checkpoint, cfg)
    common = {k: v for k, v in asdict(cfg).items() if k not in ("data", "poolings", "metrics", "extra",
                                                               "protocol", "cache", "glue_dir")}
    kw = {**common, "data": cfg.data, "metrics": cfg.metrics, "cache": cfg.cache, "glue_dir": cfg.glue_dir,
          "progress": progress, "name": name}
    paper = analyze(enc, protocol="paper", **{**kw, "max_texts": None})
    res = analyze(enc, protocol="default", poolings=cfg.poolings, **kw)
    res.paper = paper
    return res


def _load_text_sets(cfg: AnalyzeConfig, progress: Progress | None) -> list[TextSet]:
    """Every data spec, read (and checked) before the model is loaded."""
    text_sets = []
    for spec in cfg.data:
        _emit(progress, f"load {spec}", 0, 1)
        text_sets.append(load_texts(spec, max_texts=cfg.max_texts, seed=cfg.seed, glue_dir=cfg.glue_dir))
        _emit(progress, f"load {spec}", 1, 1)
    return text_sets


@dataclass
class _Collected:
    """What an analysis gathers task by task for its AnalysisResult."""

    tasks: dict[str, dict] = field(default_factory=dict)
    metric_rows: list[dict] = field(default_factory=list)
    probe_rows: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _measure_task(task: str, ts: TextSet, emb: Embeddings, last_layer: int, cfg: AnalyzeConfig,
                  progress: Progress | None, out: _Collected) -> None:
    """One task: its card and structure arrays, then per (pooling, layer) its geometry and probes."""
    out.tasks[task] = {**ts.card(), "items": "texts", "n_items": emb.n,
                       "encode": {k: v for k, v in emb.meta.items() if k not in ("model_spec",)}}
    for what in ("labels", "pairs", "pair_labels", "positives"):
        val = getattr(ts, what)
        if val is not None:
            out.arrays[array_key("struct", task, what)] = np.asarray(val)
    keys = list(emb.vectors)
    for k_i, (pooling, layer) in enumerate(keys):
        _emit(progress, f"metrics {task}", k_i, len(keys))
        x = emb.vectors[(pooling, layer)]
        _measure_geometry({"task": task, "pooling": pooling, "layer": layer}, ts, x, cfg, out)
        if cfg.probes:
            _emit(progress, f"probes {task}", k_i, len(keys))
            scores = _run_probes(ts, x, cfg.seed, lexical=layer == last_layer)
            out.probe_rows += _probe_rows(task, pooling, layer, scores, out.arrays)
    _emit(progress, f"metrics {task}", len(keys), len(keys))


def _measure_geometry(base: dict, ts: TextSet, x: np.ndarray, cfg: AnalyzeConfig, out: _Collected) -> None:
    """One embedding set (``base``: its task, pooling and layer): every metric with its interval, alignment on the
    task's positive pairs, the eigenspectrum, a histogram of pairwise cosines, and the embeddings when saved."""
    task, pooling, layer = base["task"], base["pooling"], base["layer"]
    out.metric_rows += _metric_rows(base, x, cfg)
    if len(ts.positives) >= 2:
        p = ts.positives
        ci = M.confidence_interval("alignment", x[p[:, 0]], x[p[:, 1]], confidence=cfg.confidence)
        out.metric_rows.append({**base, "metric": "alignment", **ci.as_dict()})
    out.arrays[array_key("spectrum", task, pooling, layer)] = M.eigenspectrum(x)
    out.arrays[array_key("hist", task, pooling, layer)] = _cosine_histogram(x, cfg.seed)
    if cfg.save_embeddings:
        out.arrays[array_key("emb", task, pooling, layer)] = x


def _options(cfg: AnalyzeConfig) -> dict[str, Any]:
    """The default protocol's recorded options: the config, and the definitions of what was measured."""
    return {**asdict(cfg), "poolings": list(cfg.poolings), "protocol": "default",
            "protocol_deviations": PAPER_DEVIATIONS,
            "metric_definitions": {n: {"description": M.REGISTRY[n].description,
                                       "options": dict(M.REGISTRY[n].kwargs),
                                       "reference": M.REGISTRY[n].reference,
                                       "higher_is_better": M.REGISTRY[n].higher_is_better}
                                   for n in (*cfg.metrics, "alignment")},
            "pooling_definitions": _POOLING_DEFINITIONS, "histogram": {"bins": HIST_BINS, "range": [-1, 1],
                                                                      "pairs": HIST_PAIRS}}


def analyze_checkpoints(run_dir: str | os.PathLike, checkpoints: str | Sequence[int] = "all", *,
                        name: str | None = None, progress: Progress | None = None,
                        **analyze_kwargs: Any) -> list[AnalysisResult]:
    """Analyse a trainer run's checkpoints (``"all"``, ``"every:K"``, ``"last"`` or a list of steps; see
    :func:`embedgeom.loading.trainer_checkpoints`) on the same texts with the same seed and options: one
    AnalysisResult per checkpoint, oldest first, each labelled ``<run>@<step>`` and carrying
    ``checkpoint["trajectory"] = {"run", "step", "tokens", "objective"}`` so reports draw metrics against training
    step. ``analyze_kwargs`` are :func:`analyze`'s options."""
    run = Path(run_dir).expanduser()
    label = name.strip() if isinstance(name, str) and name.strip() else run.resolve().name
    picked = trainer_checkpoints(run, checkpoints)
    _config(analyze_kwargs.get("data", ("sample:wiki",)), analyze_kwargs.get("poolings", "all"),
            analyze_kwargs.get("layers", (-1,)), analyze_kwargs.get("metrics"),
            **{k: v for k, v in analyze_kwargs.items() if k not in ("data", "poolings", "layers", "metrics")})
    out = []
    for i, ck in enumerate(picked):
        _emit(progress, "checkpoints", i, len(picked))
        res = analyze(ck.path, name=f"{label}@{ck.step}", progress=progress, **analyze_kwargs)
        res.checkpoint["trajectory"] = {"run": label, "step": ck.step, "tokens": ck.tokens,
                                        "objective": ck.objective}
        out.append(res)
    _emit(progress, "checkpoints", len(picked), len(picked))
    return out


def _encoder(checkpoint: str | os.PathLike | Encoder, cfg: AnalyzeConfig) -> Encoder:
    if isinstance(checkpoint, Encoder):
        return checkpoint
    return load_encoder(checkpoint, device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_length)


def _rewarn(caught: list, task: str, enc: Encoder) -> None:
    """Re-issue warnings caught while encoding a task, saying which model and task they are about."""
    for w in caught:
        warnings.warn(f"{task} ({Path(enc.spec).name or enc.spec}): {w.message}", w.category, stacklevel=3)


def _analyze_paper(checkpoint: str | os.PathLike | Encoder, cfg: AnalyzeConfig, progress: Progress | None,
                   name: str | None) -> AnalysisResult:
    """The reference study's protocol (:mod:`embedgeom.paper`): the first ``max_texts`` (default 2,000) rows of
    each source in order, its own tokenisation, forward pass, poolings, metrics and probes; point values only."""
    if not isinstance(checkpoint, Encoder):
        resolve_device(cfg.device)
    max_samples = cfg.max_texts or PAPER_MAX_SAMPLES
    items = []
    for spec in cfg.data:
        _emit(progress, f"load {spec}", 0, 1)
        items.append(paper_items(spec, max_samples=max_samples, glue_dir=cfg.glue_dir))
        _emit(progress, f"load {spec}", 1, 1)
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
                                   progress=lambda d, t, s=spec: _emit(progress, f"encode {s}", d, t))
        _rewarn(caught, task, enc)
        metric_rows += r.metric_rows
        probe_rows += r.probe_rows
        arrays.update({k: v for k, v in r.arrays.items() if cfg.save_embeddings or not k.startswith("emb|")})
        tasks[task] = {**r.card, "items": "joined pairs" if it.pair else "texts", "n_texts": it.n,
                       "content_hash": _items_hash(it)}
    options = {**asdict(cfg), "max_texts": max_samples, "poolings": list(PAPER_POOLINGS), "protocol": "paper",
               "protocol_departures": PAPER_PROTOCOL_DEPARTURES, "protocol_deviations": PAPER_DEVIATIONS,
               "not_applicable": ["layers", "dtype", "max_length", "special_tokens", "cache", "metrics", "groups",
                                  "confidence"],
               "metric_definitions": {m: "paper_protocol.md" for m in PAPER_METRICS}}
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


_POOLING_DEFINITIONS = {
    "mean": "average of the hidden states of real tokens (special tokens included unless special_tokens=exclude)",
    "cls": "raw hidden state of the first real token (not BERT's pooler)",
    "max": "element-wise max over real tokens, in float32",
    "attention": "the encoder's own first-token attention at that layer, head-averaged, renormalised over real "
                 "tokens (parameter-free)",
    "native": "the sentence-transformers checkpoint's declared Pooling/Dense/Normalize",
}


# --- compare --------------------------------------------------------------------------------------------

def resolve_result(x: Any, **analyze_kwargs: Any) -> AnalysisResult:
    """``x`` as an AnalysisResult: itself, a saved analysis directory (loaded), or a checkpoint (analysed with
    ``analyze_kwargs``)."""
    if isinstance(x, AnalysisResult):
        return x
    path = Path(os.fspath(x)).expanduser()
    if (path / "result.json").is_file():
        return AnalysisResult.load(path)
    return analyze(x, **analyze_kwargs)


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
                             "poolings": list(_as_tuple(poolings)) if poolings is not None else None,
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
    pair = _as_tuple(poolings)
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
        _emit(progress, "compare", i, len(pairing.matches))
        xa, xb = ra.embedding(task, pooling, layer), rb.embedding(task, pooling_b, layer_b)
        base = {"task": task, "pooling": pooling, "layer": layer, "pooling_b": pooling_b, "layer_b": layer_b}
        if paper:  # the reference protocol's own numbers, as it reports them: point values, no interval
            diffs += _point_differences(base, ra, rb)
        else:
            diffs += _metric_differences(base, metric_names, xa, xb, groups, seed, confidence)
            diffs += _alignment_difference(base, ra, xa, xb, confidence)
            diffs += _probe_differences(ra, rb, base, groups, seed, confidence)
        sims += _similarities(base, xa, xb, groups, seed, confidence, knn_k)
    _emit(progress, "compare", len(pairing.matches), len(pairing.matches))
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


def compare_groups(group_a: Sequence[AnalysisResult | str | os.PathLike],
                   group_b: Sequence[AnalysisResult | str | os.PathLike], *, names: tuple[str, str] | None = None,
                   groups: int = M.uncertainty.DEFAULT_GROUPS, seed: int = 0, confidence: float = 0.95,
                   progress: Progress | None = None, **analyze_kwargs: Any) -> ComparisonResult:
    """Seed groups: ``group_a[i]`` and ``group_b[i]`` are runs with the same seed (e.g. MLM and hybrid trained with
    seed i), analysed on the same texts. Each pair is compared as :func:`compare` does (paired b - a with a
    text-sampling interval); then, per (task, pooling, layer, metric), the mean of the per-seed differences gets
    a between-seed Student-t interval (mean -+ t_{k-1} sd / sqrt(k) over the k seeds), which includes
    seed-to-seed training variation. Rows also say in how many seeds the difference has the mean's sign
    (``seeds_agree``) and in how many its per-seed interval excludes 0 (``seeds_significant``); ``per_seed`` holds
    each seed's difference, ``per_seed_a`` / ``per_seed_b`` its two values and ``per_seed_low`` /
    ``per_seed_high`` its text-sampling interval, in the order of the groups."""
    if len(group_a) != len(group_b) or len(group_a) < 2:
        raise ValueError(f"group_b: expected as many runs as group_a (at least 2 seeds each, paired by position), "
                         f"got {len(group_a)} and {len(group_b)}. Give the runs of each seed in the same order.")
    confidence = check_confidence(confidence)
    per_seed = []
    for i, (a, b) in enumerate(zip(group_a, group_b, strict=True)):
        _emit(progress, "seed pairs", i, len(group_a))
        common = {"seed": seed, "groups": groups, "confidence": confidence, **analyze_kwargs}
        ra, rb = resolve_result(a, **common), resolve_result(b, **common)
        per_seed.append((ra, rb, compare(ra, rb, groups=groups, seed=seed, confidence=confidence)))
    _emit(progress, "seed pairs", len(group_a), len(group_a))
    k = len(per_seed)
    diffs = _seed_differences([cmp for _, _, cmp in per_seed], confidence)
    sims = _seed_similarities([cmp for _, _, cmp in per_seed], confidence)
    label_a, label_b = names or (_group_label([ra for ra, _, _ in per_seed]),
                                 _group_label([rb for _, rb, _ in per_seed]))
    return ComparisonResult(label_a, label_b, diffs, sims,
                            {"kind": "groups", "seeds": k, "confidence": confidence, "groups": groups, "seed": seed,
                             "direction": "diff = b - a (second minus first)",
                             "members": {"a": [ra.name for ra, _, _ in per_seed],
                                         "b": [rb.name for _, rb, _ in per_seed]},
                             "protocol": per_seed[0][0].options.get("protocol")},
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
                      "n": k, "seeds": k, "seeds_agree": int((np.sign(d) == sign).sum()) if sign else 0,
                      "seeds_significant": int(sum(bool(r["significant"]) and np.sign(r["diff"]) == sign
                                                   for r in rows)),
                      "per_seed": d.tolist(), "per_seed_a": [float(r["value_a"]) for r in rows],
                      "per_seed_b": [float(r["value_b"]) for r in rows],
                      "per_seed_low": [float(r["low"]) for r in rows],
                      "per_seed_high": [float(r["high"]) for r in rows],
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
