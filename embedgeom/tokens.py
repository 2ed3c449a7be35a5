"""Token-level geometry of a checkpoint, per layer: how contextual its token representations are.

:func:`token_geometry` reads each data spec, plans which tokens to keep (:func:`embedgeom.token_sink.plan_tokens`,
no model), runs the forward pass once (twice with a post-processing: the first pass fits it) handing every batch to
a :class:`~embedgeom.token_sink.TokenSink`, and turns what the sink kept into metric rows with delete-a-group
jackknife intervals over texts (:mod:`embedgeom.metrics.tokens` defines every metric). Options:
:class:`TokenOptions`. The result is a :class:`~embedgeom.token_results.TokenGeometryResult`.

Departures from the reference implementations (Ethayarajh's ``analyze.py``; the ACL 2023 isotropy study), stated
here and in every saved result (``options.departures``):

* self-similarity is exact over all pairs of *all* occurrences of a kept id (closed form), not over a subsample;
  ids are token ids (word pieces), not words, and only non-special tokens take part;
* an id is eligible with 5+ occurrences in 2+ texts (the reference: a word in 5+ contexts); at most ``max_ids``
  eligible ids are kept (a seeded sample when more are eligible);
* MEV is the first principal component's variance share of the id's *centred* occurrences (the reference takes the
  first component of an uncentred truncated SVD), on at most ``max_occurrences`` seeded occurrences per id;
* the anisotropy baseline is the mean cosine over all pairs of one occurrence sampled per text (the reference: random
  pairs of random words), so it is exact and shares the texts' jackknife groups;
* every number has a delete-a-group jackknife interval over texts (the references report point values).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .metrics import jackknife
from .metrics import tokens as T
from .options import DEFAULT_DATA, check_confidence, check_groups, check_int, check_seed, parse_layers, split_names
from .postprocess import POSTPROCESS_DEFINITIONS, check_postprocess, fit_from_moments, parse_postprocess
from .progress import Progress, emit
from .results import array_key, reproducibility_card
from .storage import unique_name
from .token_results import TokenGeometryResult
from .token_sink import LayerState, MomentSink, TokenPlan, TokenSink, non_special_ids, plan_tokens

DEPARTURES = (
    "self-similarity exact over all pairs of all occurrences of a kept id; ids are token ids of non-special tokens",
    "eligible ids: 5+ occurrences in 2+ texts; at most max_ids kept (seeded sample)",
    "MEV on the centred occurrences (reference: uncentred truncated SVD), at most max_occurrences seeded "
    "occurrences per id",
    "anisotropy baseline: mean cosine over all pairs of one occurrence sampled per text (reference: random pairs)",
    "delete-a-group jackknife intervals over texts on every number (reference: point values)",
)


@dataclass(frozen=True)
class TokenOptions:
    """Every option of a token analysis (:func:`token_geometry`, ``embedgeom tokens``), validated by
    :meth:`create` (one ValueError naming the option, what it expected, what it got and the fix) and recorded in
    every result.

    ``max_ids`` / ``max_occurrences`` bound the memory: per layer the sink keeps O(n_texts x d + max_ids x groups x d
    + max_ids x max_occurrences x d) numbers, never the token states of all layers. ``dtype`` defaults to float32:
    bfloat16 rounding can exceed the spread of strongly anisotropic token states (README, "Poolings")."""

    data: tuple[str, ...] = DEFAULT_DATA
    layers: str | tuple[int, ...] = "all"
    max_texts: int | None = None
    seed: int = 0
    postprocess: str = "none"
    max_ids: int = 200
    max_occurrences: int = 50
    groups: int = 20
    confidence: float = 0.95
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int | None = None
    max_length: int | None = None
    glue_dir: str | None = None

    @classmethod
    def create(cls, **values: Any) -> TokenOptions:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{unknown[0]}: not a token-analysis option; expected some of {', '.join(names)}.")
        v = {**{f.name: f.default for f in fields(cls)}, **values}
        data = split_names(v["data"] if v["data"] is not None else DEFAULT_DATA)
        if not data or not all(isinstance(d, str) for d in data):
            raise ValueError(f"data: expected data specs (e.g. sample:lee), got {v['data']!r}.")
        from .loading import COMPUTE_DTYPES

        if v["dtype"] not in COMPUTE_DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {v['dtype']!r}.")
        if not isinstance(v["device"], str) or not v["device"].strip():
            raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {v['device']!r}.")
        opt = {"optional": True}
        return cls(
            data=data, layers=parse_layers(v["layers"], "layers"),
            max_texts=check_int(v["max_texts"], "max_texts", minimum=2, fix="Omit it to use every text.", **opt),
            seed=check_seed(v["seed"]), postprocess=check_postprocess(v["postprocess"]),
            max_ids=check_int(v["max_ids"], "max_ids", minimum=1, fix="Pass e.g. 200."),
            max_occurrences=check_int(v["max_occurrences"], "max_occurrences", minimum=2, fix="Pass e.g. 50."),
            groups=check_groups(v["groups"]), confidence=check_confidence(v["confidence"]), device=v["device"],
            dtype=v["dtype"],
            batch_size=check_int(v["batch_size"], "batch_size", minimum=1, fix="Omit it for the default.", **opt),
            max_length=check_int(v["max_length"], "max_length", minimum=2, fix="Omit it for the model's.", **opt),
            glue_dir=None if v["glue_dir"] is None else str(v["glue_dir"]))

    def record(self) -> dict[str, Any]:
        return {f.name: list(getattr(self, f.name)) if isinstance(getattr(self, f.name), tuple)
                else getattr(self, f.name) for f in fields(self)}


def token_geometry(checkpoint: Any, data: str | Sequence[str] | None = None, *, options: TokenOptions | None = None,
                   name: str | None = None, progress: Progress | None = None, **kwargs: Any) -> TokenGeometryResult:
    """Token-level geometry of ``checkpoint`` (anything :func:`embedgeom.load_encoder` takes, or an Encoder) on each
    data spec, at each requested layer (default: every hidden state, 0 = embeddings): intra-similarity,
    self-similarity, MEV, the anisotropy baseline and the adjusted forms, token norms, rogue dimensions, token
    uniformity and effective rank (definitions: :mod:`embedgeom.metrics.tokens`), each with a delete-a-group
    jackknife interval over texts. Options: :class:`TokenOptions` fields as keywords or ``options=`` (keywords
    override it). With ``postprocess`` other than ``none``, every metric is reported twice: raw (``postprocess``
    column ``none``) and post-processed (fitted per task and layer on all non-special token states)."""
    if options is not None and not isinstance(options, TokenOptions):
        raise ValueError(f"options: expected a TokenOptions, got {type(options).__name__}.")
    base = options.record() if options is not None else {}
    cfg = TokenOptions.create(**{**base, **kwargs, **({"data": data} if data is not None else {})})
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty label such as 'MiniLM', got {name!r}.")
    from .data import load_texts
    from .loading import Encoder, load_encoder

    sets = []
    for spec in cfg.data:
        emit(progress, f"load {spec}", 0, 1)
        sets.append(load_texts(spec, max_texts=cfg.max_texts, seed=cfg.seed, glue_dir=cfg.glue_dir))
        emit(progress, f"load {spec}", 1, 1)
    enc = checkpoint if isinstance(checkpoint, Encoder) else load_encoder(
        checkpoint, device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_length)
    layers = _layers(cfg.layers, enc.num_layers)
    rows: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    tasks: dict[str, dict] = {}
    used: set[str] = set()
    for spec, ts in zip(cfg.data, sets, strict=True):
        task = unique_name(ts.name, used)
        card = _measure_task(enc, task, list(ts.texts), layers, cfg, progress, rows, arrays)
        tasks[task] = {"spec": spec, "description": ts.description, "n_texts": len(ts.texts),
                       "texts_hash": ts.content_hash, **card}
    return TokenGeometryResult(enc.card(), tasks, _options(cfg), rows, arrays, reproducibility_card(cfg.seed),
                               name.strip() if name else "")


def _layers(spec: Any, num_layers: int) -> tuple[int, ...]:
    if spec == "all":
        return tuple(range(num_layers + 1))
    out = []
    for lay in spec:
        if not -num_layers - 1 <= lay <= num_layers:
            raise ValueError(f"layers: expected hidden-state indices in [{-num_layers - 1}, {num_layers}] for this "
                             f"{num_layers}-layer model, got {lay}.")
        out.append(lay % (num_layers + 1))
    return tuple(dict.fromkeys(out))


def _options(cfg: TokenOptions) -> dict[str, Any]:
    sp = parse_postprocess(cfg.postprocess)
    return {**cfg.record(), "kind": "tokens", "departures": list(DEPARTURES),
            "postprocess_definition": sp.definition if sp.kind != "none" else POSTPROCESS_DEFINITIONS["none"],
            "pair_limit": T.PAIR_LIMIT, "min_occurrences": T.MIN_OCCURRENCES, "min_texts": T.MIN_TEXTS,
            "rogue_top": T.ROGUE_TOP, "uniformity_t": T.UNIFORMITY_T, "tokens": "non-special tokens of each text",
            "metric_definitions": {n: {"description": i.description, "reference": i.reference,
                                       "higher_is_better": i.higher_is_better} for n, i in T.TOKEN_METRICS.items()}}


def _measure_task(enc: Any, task: str, texts: list[str], layers: tuple[int, ...], cfg: TokenOptions,
                  progress: Progress | None, rows: list[dict], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    from .encoding import forward_to_sinks

    max_length = cfg.max_length or enc.max_length
    plan = plan_tokens(non_special_ids(enc.tokenizer, texts, max_length), groups=min(cfg.groups, len(texts)),
                       seed=cfg.seed, max_ids=cfg.max_ids, max_occurrences=cfg.max_occurrences)
    kw = {"batch_size": cfg.batch_size, "max_length": max_length, "padding_side": "right"}
    variants: dict[str, Any] = {"none": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cfg.postprocess != "none":
            (moments,), _ = forward_to_sinks(enc, texts, [MomentSink(layers)], **kw,
                                             progress=lambda d, t: emit(progress, f"fit {cfg.postprocess} {task}",
                                                                        d, t))
            variants[cfg.postprocess] = {lay: fit_from_moments(cfg.postprocess, *moments[lay]) for lay in layers}
        (states,), meta = forward_to_sinks(enc, texts, [TokenSink(plan, layers, variants)], **kw,
                                           progress=lambda d, t: emit(progress, f"tokens {task}", d, t))
    for w in {(w.category, str(w.message)): w for w in caught}.values():
        warnings.warn(f"{task}: {w.message}", w.category, stacklevel=3)
    for i, (layer, variant) in enumerate(sorted(states)):
        emit(progress, f"metrics {task}", i, len(states))
        rows += layer_rows(task, layer, variant, states[(layer, variant)], plan, cfg, arrays)
    emit(progress, f"metrics {task}", len(states), len(states))
    return {"plan": plan.record(), "groups": plan.groups,
            "kept_bytes_per_layer": int(next(iter(states.values())).nbytes()) if states else 0,
            "encode": {k: v for k, v in meta.items() if k not in ("model_spec",)}}


def layer_rows(task: str, layer: int, variant: str, st: LayerState, plan: TokenPlan, cfg: TokenOptions,
               arrays: dict[str, np.ndarray]) -> list[dict]:
    """Every token metric of one layer and variant, with its interval, from what the sink kept; the replicates
    (for paired comparisons) and the rogue-dimension shares go into ``arrays``."""
    G = plan.groups
    jk = f"delete-a-group jackknife over texts ({G} groups)"
    base = {"task": task, "layer": int(layer), "postprocess": variant}
    z = st.sample.astype(np.float64)
    z = z / np.where((nz := np.linalg.norm(z, axis=1, keepdims=True)) > 0, nz, 1.0)
    k = plan.kept_ids.size
    stats: dict[str, tuple[T.Replicated, str]] = {}
    stats["intra_similarity"] = (T.intra_from_texts(st.intra, plan.group, G),
                                 f"mean over the texts of 2+ tokens; {jk}")
    sums = st.id_sums.numpy().reshape(k, G, -1)
    ss = T.self_similarity_from_sums(sums, st.id_sq.numpy().reshape(k, G), st.id_counts.numpy().reshape(k, G))
    sampled = f", a seeded sample of {k} of the {plan.eligible} eligible" if plan.eligible > k else ""
    stats["self_similarity"] = (ss, f"exact over all pairs of all occurrences of {k} ids{sampled}; {jk}")
    mv = T.mev_from_occurrences(st.occ.astype(np.float64), plan.occ_id, plan.group[plan.occ_text], G)
    stats["mev"] = (mv, f"{k} ids, at most {cfg.max_occurrences} occurrences each ({plan.capped_ids} ids "
                        f"seeded-sampled to that); {jk}")
    an = T.anisotropy_from_samples(z, plan.group, G)
    n = plan.n_texts
    stats["anisotropy"] = (an, f"exact over all {n * (n - 1) // 2:,} pairs of one occurrence sampled per text "
                               f"(closed form); {jk}")
    for m in ("self_similarity", "intra_similarity", "mev"):
        r = stats[m][0]
        stats[f"adjusted_{m}"] = (T.Replicated(r.value - an.value, r.replicates - an.replicates, r.n),
                                  f"{m} minus anisotropy, paired replicates; {jk}")
    mean_norm, std_norm = T.norms_from_texts(st.norm_sum, st.norm_m2, st.counts, plan.group, G)
    stats["token_norm"] = (mean_norm, f"mean over all {plan.n_tokens:,} non-special tokens; {jk}")
    stats["token_norm_std"] = (std_norm, f"population std over all {plan.n_tokens:,} non-special tokens; {jk}")
    rogue, rs = T.rogue_from_samples(z, plan.group, G, T.ROGUE_TOP)
    stats["rogue_share"] = (rs, f"top {T.ROGUE_TOP} dimensions {list(rogue.top)} of the expected cosine over all "
                                f"pairs of one occurrence per text (closed form); {jk}")
    un, umethod = T.uniformity_from_samples(z, plan.group, G, t=T.UNIFORMITY_T, pair_limit=T.PAIR_LIMIT,
                                            seed=cfg.seed)
    stats["token_uniformity"] = (un, f"{umethod} of one occurrence per text; {jk}")
    stats["token_effective_rank"] = (T.effective_rank_from_samples(st.sample.astype(np.float64), plan.group, G),
                                     f"centred occurrences sampled one per text; {jk}")
    key = (task, layer, variant)
    arrays[array_key("rogue", *key)] = rogue.shares
    arrays[array_key("contrib", *key)] = rogue.contributions
    out = []
    for name, (r, method) in stats.items():
        arrays[array_key("rep", *key, name)] = r.replicates
        bounds = T.TOKEN_METRICS[name].bounds
        row = {**base, "metric": name, **_interval(r, cfg.confidence, method, bounds)}
        if name == "rogue_share":
            row["dimensions"] = list(rogue.top)
        out.append(row)
    return out


def _interval(r: T.Replicated, confidence: float, method: str, bounds: tuple[float, float] | None) -> dict[str, Any]:
    reps = r.replicates
    if not math.isfinite(r.value) or not np.isfinite(reps).all():
        return {"value": r.value, "stderr": math.nan, "low": math.nan, "high": math.nan, "n": r.n,
                "confidence": confidence, "method": method + "; undefined in some replicate: no interval",
                "replicates": int(reps.size)}
    return jackknife.interval(r.value, reps, r.n, confidence, method, bounds).as_dict()
