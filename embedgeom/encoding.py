"""Texts -> hidden states -> every requested pooling at every requested layer, in one forward per batch.

Choices that change numbers (all recorded in ``Embeddings.meta``):

* texts are tokenised once, truncated to ``max_length`` tokens (counted and warned about once), sorted by
  length, batched, padded on the ``padding_side`` (right by default), and returned in the input order;
* with left padding, BERT-style absolute position ids are recomputed from the mask so a text's vector does
  not depend on the batch it was padded into (models that derive positions from padding, such as RoBERTa,
  do this themselves);
* ``special_tokens="include"`` (default, as sentence-transformers): [CLS]/[SEP] take part in mean, max and
  attention pooling; ``"exclude"`` pools over the text's own tokens only. CLS is always the first real token;
* attention pooling at hidden layer l >= 1 uses layer l's own attention of the first real token to every
  pooled token, averaged over heads and renormalised; at the last layer this is the standard definition.
  There is no attention at layer 0 (the embedding output), so it is not available there;
* forward passes run under ``torch.inference_mode`` and autocast in the encoder's compute dtype (bfloat16 on
  GPU and bf16-native CPUs by default); pooling and the returned vectors are float32. When that dtype was
  chosen by ``dtype="auto"``, each call first encodes up to ``PRECISION_CHECK_TEXTS`` evenly spaced texts in
  both precisions and uses float32 for the whole call if, for any requested pooling and layer, the median
  per-text error exceeds ``PRECISION_TOLERANCE`` of the median spread of the float32 vectors about their
  mean. The check and the dtype used are recorded in ``meta["precision_check"]`` and ``meta["compute_dtype"]``.
* text pairs (``text_pairs=``) are joined by the tokenizer's own sentence-pair template, e.g.
  ``[CLS] a [SEP] b [SEP]`` with segment ids 0/1 for BERT; truncation ``longest_first``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from . import _capture
from .embcache import EmbeddingCache, texts_hash
from .loading import Encoder, NativePooling, _quiet_transformers, tokenizer_fingerprint
from .options import parse_layers
from .pooling import (
    ALL_POOLINGS,
    POOLING_VERSION,
    POOLINGS,
    attention_pool,
    cls_pool,
    first_token_attention,
    max_pool,
    mean_pool,
)

SpecialTokens = Literal["include", "exclude"]
PaddingSide = Literal["right", "left"]
#: Models whose position ids are derived from the padding token by the model itself.
_PADDING_AWARE_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text",
                            "xmod", "roberta-prelayernorm", "ibert", "luke", "markuplm", "esm"}


class TruncationWarning(UserWarning):
    """Some texts were longer than max_length and were truncated."""


class BatchSizeWarning(UserWarning):
    """The GPU ran out of memory and the batch size was halved."""


@dataclass
class Embeddings:
    """Pooled embeddings of n texts: ``vectors[(pooling, layer)]`` is a float32 (n, d) array.

    ``layer`` is the absolute hidden-state index: 0 = embedding output, ``num_layers`` = last layer.
    ``meta`` records how they were produced (model hash, dtype, max_length, truncation count, options).
    """

    vectors: dict[tuple[str, int], np.ndarray]
    n: int
    num_layers: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        dims = sorted({v.shape[1] for v in self.vectors.values()})
        return (f"Embeddings(n={self.n}, poolings={list(self.poolings)}, layers={list(self.layers)}, dim={dims}, "
                f"compute_dtype={self.meta.get('compute_dtype')!r})")

    @property
    def poolings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for p, _ in self.vectors))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({lay for _, lay in self.vectors}))

    def layer_index(self, layer: int) -> int:
        return normalise_layer(layer, self.num_layers)

    def get(self, pooling: str = "mean", layer: int = -1) -> np.ndarray:
        key = (pooling, self.layer_index(layer))
        if key not in self.vectors:
            have = ", ".join(f"{p}@{lay}" for p, lay in self.vectors)
            raise KeyError(f"no {pooling!r} embeddings at layer {layer} (have: {have})")
        return self.vectors[key]

    def __getitem__(self, key: tuple[str, int] | str) -> np.ndarray:
        if isinstance(key, str):
            return self.get(key)
        return self.get(*key)


def normalise_layer(layer: int, num_layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise ValueError(f"layers: expected integers, got {layer!r}.")
    if not -(num_layers + 1) <= layer <= num_layers:
        raise ValueError(f"layers: expected indices in [-{num_layers + 1}, {num_layers}] (0 = embeddings, "
                         f"{num_layers} or -1 = last layer), got {layer}.")
    return int(layer) % (num_layers + 1)


class CustomPooler(Protocol):
    """A caller-supplied pooling: ``pooler(hidden float32 (b, L, d), attention_mask bool (b, L)) -> (b, d')``.
    ``fingerprint`` identifies it (including any seed) in the embedding cache."""

    fingerprint: str

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


def _normalise_poolings(poolings: str | Sequence[str], encoder: Encoder,
                        custom: Mapping[str, CustomPooler]) -> tuple[str, ...]:
    if isinstance(poolings, str):
        poolings = (*POOLINGS, *(("native",) if encoder.native else ())) if poolings == "all" \
            else tuple(p.strip() for p in poolings.split(","))
    out = tuple(dict.fromkeys(poolings))
    if not out:
        raise ValueError(f"poolings: expected at least one of {ALL_POOLINGS}, got none.")
    for p in out:
        if p not in ALL_POOLINGS and p not in custom:
            raise ValueError(f"poolings: expected names from {ALL_POOLINGS} or 'all', got {p!r}.")
    if "native" in out and encoder.native is None:
        why = encoder.info.get("native_unavailable") or "it is not a sentence-transformers checkpoint"
        raise ValueError(f"poolings: 'native' needs a checkpoint that declares its pooling; {encoder.spec} does "
                         f"not ({why}). Use mean, cls, max or attention.")
    return out


def _normalise_layers(layers: str | int | Sequence[int], num_layers: int) -> tuple[int, ...]:
    spec = parse_layers(layers)
    if spec == "all":
        return tuple(range(num_layers + 1))
    return tuple(dict.fromkeys(normalise_layer(lay, num_layers) for lay in spec))


def _check_texts(texts: Any, name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise ValueError(f"{name}: expected a string or a list of strings, got {type(texts).__name__}.")
    if len(texts) == 0:
        raise ValueError(f"{name}: expected at least one text, got an empty list.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{name}: expected strings, got {type(t).__name__} at index {i}.")
    return list(texts)


@dataclass
class _Tokens:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    special: list[list[int]]
    truncated: int


def _tokenise(encoder: Encoder, texts: list[str], pairs: list[str] | None, max_length: int) -> _Tokens:
    tok = encoder.tokenizer
    common = {"add_special_tokens": True, "return_special_tokens_mask": True, "return_attention_mask": False}
    with _quiet_transformers():
        full = tok(texts, pairs, truncation=False, **common)
        lengths = [len(ids) for ids in full["input_ids"]]
        truncated = sum(n > max_length for n in lengths)
        enc = tok(texts, pairs, truncation="longest_first" if pairs is not None else True,
                  max_length=max_length, **common) if truncated else full
    return _Tokens(enc["input_ids"], enc.get("token_type_ids"), enc["special_tokens_mask"], truncated)


def _position_ids(model: Any, mask: torch.Tensor, padding_side: str) -> torch.Tensor | None:
    """Mask-derived position ids for left padding (None where the default is already right)."""
    if padding_side == "right" or model.config.model_type in _PADDING_AWARE_POSITIONS:
        return None
    if "position_ids" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"padding_side: left padding needs position ids, which {type(model).__name__} does not "
                         "accept. Use padding_side='right'.")
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _native_pool(native: NativePooling, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' Pooling -> Dense -> Normalize, on the last hidden state."""
    parts = []
    for mode in native.modes:
        if mode == "mean":
            parts.append(mean_pool(hidden, mask))
        elif mode == "cls":
            parts.append(cls_pool(hidden, mask))
        elif mode == "max":
            parts.append(max_pool(hidden, mask))
        else:  # mean_sqrt_len
            m = mask.to(torch.float32).unsqueeze(-1)
            parts.append((hidden.to(torch.float32) * m).sum(1) / m.sum(1).sqrt())
    v = torch.cat(parts, dim=1)
    acts = {"Identity": lambda t: t, "Tanh": torch.tanh, "ReLU": torch.relu,
            "GELU": torch.nn.functional.gelu}
    for layer in native.dense:
        w = layer.weight.to(v.device, torch.float32)
        v = v @ w.T
        if layer.bias is not None:
            v = v + layer.bias.to(v.device, torch.float32)
        v = acts[layer.activation](v)
    if native.normalize:
        v = torch.nn.functional.normalize(v, p=2, dim=1)
    return v


def _cache_for(cache: bool | str | os.PathLike | EmbeddingCache | None) -> EmbeddingCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return EmbeddingCache()
    if isinstance(cache, EmbeddingCache):
        return cache
    return EmbeddingCache(cache)


def _is_oom(err: BaseException) -> bool:
    """CUDA (or other accelerator) out-of-memory, which halving the batch can cure."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def encode(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    poolings: str | Sequence[str] = POOLINGS,
    layers: str | int | Sequence[int] = (-1,),
    text_pairs: Sequence[str] | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    special_tokens: SpecialTokens = "include",
    padding_side: PaddingSide = "right",
    cache: bool | str | os.PathLike | EmbeddingCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    custom_poolers: Mapping[str, CustomPooler] | None = None,
) -> Embeddings:
    """Encode ``texts`` once and return every requested pooling at every requested layer.

    ``poolings``: names from ``mean, cls, max, attention, native`` or ``"all"``; ``layers``: hidden-state
    indices (``-1`` = last, ``0`` = embeddings) or ``"all"``. ``text_pairs``: second segments, joined with
    the tokenizer's pair template. ``cache``: True for the default on-disk cache, a directory, or None.
    ``progress(done, total)`` is called after each batch. ``batch_size`` defaults to 32 on CPU (less
    padding; fastest measured) and 128 on GPUs. ``custom_poolers`` adds named poolings computed from the
    same hidden states (e.g. the reference study's random attention head, see :mod:`embedgeom.protocols`).
    See the module docstring for every convention.
    """
    custom = dict(custom_poolers or {})
    texts = _check_texts(texts, "texts")
    pairs = _check_texts(text_pairs, "text_pairs") if text_pairs is not None else None
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"text_pairs: expected {len(texts)} second segments (one per text), got {len(pairs)}.")
    if special_tokens not in ("include", "exclude"):
        raise ValueError(f"special_tokens: expected 'include' or 'exclude', got {special_tokens!r}.")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side: expected 'right' or 'left', got {padding_side!r}.")
    if batch_size is None:
        batch_size = 32 if encoder.device.type == "cpu" else 128
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}.")
    L = encoder.num_layers
    pools = _normalise_poolings(poolings, encoder, custom)
    lays = _normalise_layers(layers, L)
    if lays == (0,) and set(pools) <= {"attention", "cls"}:
        raise ValueError("layers: attention and CLS pooling need a transformer layer (>= 1); layer 0 is the "
                         "embedding output (no attention; the same [CLS] vector for every text).")
    mlen = encoder.max_length if max_length is None else max_length
    if isinstance(mlen, bool) or not isinstance(mlen, int) or mlen < 2:
        raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}.")
    # skipped by construction: attention at layer 0 (no attention there), CLS at layer 0 (the [CLS] token's
    # input embedding, identical for every text), native below the last layer
    wanted = [(p, lay) for lay in lays for p in pools
              if not (p in ("attention", "cls") and lay == 0) and not (p == "native" and lay != L)]
    tokenizer_hash = encoder.tokenizer_hash or tokenizer_fingerprint(encoder.tokenizer)
    native_hash = encoder.native.fingerprint() if encoder.native is not None else None
    meta = {
        "model_hash": encoder.weights_hash(), "tokenizer_hash": tokenizer_hash, "model_spec": encoder.spec,
        "texts_hash": texts_hash(texts, pairs),
        "n": len(texts), "max_length": mlen, "compute_dtype": _dtype_name(encoder.compute_dtype),
        "special_tokens": special_tokens, "pair_mode": "joined" if pairs is not None else "single",
        "padding_side": padding_side, "native": encoder.native.describe() if encoder.native else None,
        "precision_check": None,
    }
    store = _cache_for(cache)

    def checked_low() -> bool:
        """Reduced precision chosen by ``auto``: verified by the precision check before it is used or reused."""
        return encoder.dtype_policy == "auto" and meta["compute_dtype"] != "float32"

    def cache_key(k: tuple[str, int]) -> str:
        """Everything that changes the vector of pooling k[0] at layer k[1] (see :mod:`embedgeom.embcache`)."""
        return EmbeddingCache.key({**{f: meta[f] for f in ("model_hash", "texts_hash", "max_length", "compute_dtype",
                                                           "special_tokens", "pair_mode", "padding_side")},
                                   "tokenizer_hash": tokenizer_hash, "pooling": k[0], "layer": k[1],
                                   "num_layers": L, "native": native_hash if k[0] == "native" else None,
                                   "custom": custom[k[0]].fingerprint if k[0] in custom else None,
                                   "precision_checked": checked_low(), "pooling_version": POOLING_VERSION})

    def lookup(ks: list[tuple[str, int]]) -> list[tuple[str, int]]:
        if store is not None:
            for k in ks:
                hit = store.get(cache_key(k))
                if hit is not None and hit.shape[0] == len(texts):
                    vectors[k] = hit
        return [k for k in ks if k not in vectors]

    vectors: dict[tuple[str, int], np.ndarray] = {}
    missing = lookup(wanted)
    run_args = (mlen, special_tokens, padding_side, batch_size)
    run_meta: dict[str, Any] | None = None
    if checked_low() and not missing:  # every vector came from the cache, stored after passing the check
        meta["precision_check"] = {"dtype": meta["compute_dtype"], "passed": True, "used": meta["compute_dtype"],
                                   "from_cache": True}
    elif checked_low():
        check, probe_out = _check_precision(encoder, texts, pairs, missing, run_args, custom)
        meta["precision_check"] = check
        meta["compute_dtype"] = check["used"]
        if not check["passed"]:
            missing = lookup(missing)  # float32 vectors may already be cached
        if probe_out is not None and missing:  # the probe was every text: its vectors are the answer
            chosen, run_meta = probe_out[check["used"]]
            vectors.update({k: chosen[k] for k in missing})
            if progress is not None:
                progress(len(texts), len(texts))
    computed = list(missing)
    missing = [k for k in missing if k not in vectors]
    meta["cache"] = {"hits": len(wanted) - len(computed), "misses": len(computed),
                     "dir": str(store.root) if store else None}
    if missing:
        run_meta = _run_forward(encoder, texts, pairs, missing, *run_args, progress, vectors, custom,
                                getattr(torch, meta["compute_dtype"]))
    if run_meta is not None:
        meta.update(run_meta)
    if store is not None:
        for k in computed:
            store.put(cache_key(k), vectors[k], {**meta, "pooling": k[0], "layer": k[1]})
    if not computed and progress is not None:
        progress(len(texts), len(texts))
    ordered = {k: vectors[k] for k in wanted}
    return Embeddings(ordered, len(texts), L, meta)



#: Texts (evenly spaced over the input) encoded in both the reduced and float32 precision to check ``auto``.
PRECISION_CHECK_TEXTS = 64
#: Largest accepted ratio, for every requested (pooling, layer), of the median distance between a text's
#: reduced-precision and float32 vectors to the median distance of the float32 vectors from their mean (the
#: spread the metrics measure). Measured in bfloat16 on CPU: 0.009 for MiniLM's last layer
#: (reports/benchmarks/encode_cpu.md); 1,800-7,100 for a paper-preset MLM encoder after 500 steps, whose vectors share
#: one large component (reports/cpu-study/tables/tables.md).
PRECISION_TOLERANCE = 0.02


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_precision(encoder: Encoder, texts: list[str], pairs: list[str] | None, keys: list[tuple[str, int]],
                     run_args: tuple[int, str, str, int], custom: Mapping[str, CustomPooler],
                     ) -> tuple[dict[str, Any], dict[str, tuple[dict, dict[str, Any]]] | None]:
    """Encode a probe of the texts in the encoder's reduced compute dtype and in float32 and compare.

    Returns the check's record and, when the probe was every text, both encodings (so nothing is redone).
    """
    n = len(texts)
    idx = np.unique(np.linspace(0, n - 1, min(n, PRECISION_CHECK_TEXTS)).round().astype(int))
    sub = [texts[i] for i in idx]
    sub_pairs = [pairs[i] for i in idx] if pairs is not None else None
    results: dict[str, tuple[dict, dict[str, Any]]] = {}
    for dtype in (encoder.compute_dtype, torch.float32):
        vecs: dict[tuple[str, int], np.ndarray] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # warned about once, by the full pass
            run_meta = _run_forward(encoder, sub, sub_pairs, keys, *run_args, None, vecs, custom, dtype)
        results[_dtype_name(dtype)] = (vecs, run_meta)
    low, high = results[_dtype_name(encoder.compute_dtype)][0], results["float32"][0]
    worst, worst_key = 0.0, keys[0]
    for k in keys:
        a, b = low[k].astype(np.float64), high[k].astype(np.float64)
        err = float(np.median(np.linalg.norm(a - b, axis=1)))
        spread = float(np.median(np.linalg.norm(b - b.mean(axis=0), axis=1)))
        ratio = err / spread if spread > 0 else (0.0 if err == 0 else float("inf"))
        if ratio > worst or not np.isfinite(ratio):
            worst, worst_key = ratio, k
    passed = bool(worst <= PRECISION_TOLERANCE)
    record = {"dtype": _dtype_name(encoder.compute_dtype), "texts": len(idx), "tolerance": PRECISION_TOLERANCE,
              "worst_ratio": worst if np.isfinite(worst) else None, "worst": f"{worst_key[0]}@{worst_key[1]}",
              "passed": passed, "used": _dtype_name(encoder.compute_dtype) if passed else "float32"}
    if n == 1 and not passed:
        record["note"] = "a single text has no spread to compare the error with; float32 used"
    return record, (results if len(idx) == n else None)

def _run_forward(encoder: Encoder, texts: list[str], pairs: list[str] | None, keys: list[tuple[str, int]],
                 mlen: int, special_tokens: str, padding_side: str, batch_size: int,
                 progress: Callable[[int, int], None] | None, out: dict[tuple[str, int], np.ndarray],
                 custom: Mapping[str, CustomPooler], compute_dtype: torch.dtype) -> dict[str, Any]:
    model = encoder.model
    toks = _tokenise(encoder, texts, pairs, mlen)
    empty = [i for i, sp in enumerate(toks.special) if all(sp)]
    if empty:
        shown = ", ".join(f"{i} ({texts[i][:30]!r})" for i in empty[:5])
        raise ValueError(f"texts: expected every text to contain at least one token, got {len(empty)} that "
                         f"tokenise to nothing (first: {shown}). Drop empty or whitespace-only texts.")
    if toks.truncated:
        warnings.warn(f"{toks.truncated} of {len(texts)} texts were longer than max_length={mlen} tokens and were "
                      "truncated.", TruncationWarning, stacklevel=3)
    order = np.argsort([-len(ids) for ids in toks.input_ids], kind="stable")
    capture = "attention" in {p for p, _ in keys} and \
        getattr(model.config, "_attn_implementation", None) == _capture.IMPLEMENTATION
    eager_attn = "attention" in {p for p, _ in keys} and not capture
    impl_before = getattr(model.config, "_attn_implementation", None)
    if eager_attn and impl_before != "eager":
        model.set_attn_implementation("eager")  # only this model, only for this call (restored below)
    try:
        return _forward_batches(encoder, texts, toks, order, keys, capture, eager_attn, special_tokens,
                                padding_side, batch_size, progress, out, custom, compute_dtype)
    finally:
        if eager_attn and impl_before != "eager":
            model.set_attn_implementation(impl_before)


def _forward_batches(encoder: Encoder, texts: list[str], toks: _Tokens, order: np.ndarray,
                     keys: list[tuple[str, int]], capture: bool, eager_attn: bool, special_tokens: str,
                     padding_side: str, batch_size: int, progress: Callable[[int, int], None] | None,
                     out: dict[tuple[str, int], np.ndarray], custom: Mapping[str, CustomPooler],
                     compute_dtype: torch.dtype) -> dict[str, Any]:
    model, tok, dev = encoder.model, encoder.tokenizer, encoder.device
    L = encoder.num_layers
    n = len(texts)
    layers_needed = sorted({lay for _, lay in keys})
    attn_layers = sorted({lay for p, lay in keys if p == "attention"})
    need_hidden = layers_needed != [L]
    bufs: dict[tuple[str, int], np.ndarray] = {}
    n_tokens = 0
    bs = batch_size
    done = 0
    halvings = 0
    start = 0
    autocast = torch.autocast(device_type=dev.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
    while start < n:
        idx = order[start : start + bs]
        feats = {"input_ids": [toks.input_ids[i] for i in idx]}
        if toks.token_type_ids is not None:
            feats["token_type_ids"] = [toks.token_type_ids[i] for i in idx]
        with _quiet_transformers():
            batch = tok.pad(feats, padding=True, return_tensors="pt", padding_side=padding_side)
        sp_lists = [toks.special[i] for i in idx]
        width = batch["input_ids"].shape[1]
        special = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, sp in enumerate(sp_lists):
            s = torch.tensor(sp, dtype=torch.bool)
            if padding_side == "right":
                special[r, : len(sp)] = s
            else:
                special[r, width - len(sp):] = s
        inputs = {k: v.to(dev) for k, v in batch.items()}
        attn_mask = inputs["attention_mask"].bool()
        pos = _position_ids(model, attn_mask, padding_side)
        if pos is not None:
            inputs["position_ids"] = pos
        try:
            recorder = _capture.Recorder(frozenset(attn_layers)) if capture else contextlib.nullcontext()
            with torch.inference_mode(), autocast, recorder as rec:
                outputs = model(**inputs, output_hidden_states=need_hidden, output_attentions=eager_attn,
                                return_dict=True)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if _is_oom(err) and bs > 1:
                torch.cuda.empty_cache()
                bs = max(1, bs // 2)
                halvings += 1
                warnings.warn(f"GPU out of memory: batch size halved to {bs} and continuing.", BatchSizeWarning,
                              stacklevel=3)
                continue
            raise
        hidden = outputs.hidden_states if need_hidden else None
        pool_mask = attn_mask & ~special.to(dev) if special_tokens == "exclude" else attn_mask
        first = attn_mask.to(torch.int8).argmax(dim=1)
        weights: dict[int, torch.Tensor] = {}
        for lay in attn_layers:
            if capture:
                if len(rec.calls) != L:
                    raise RuntimeError(f"attention pooling: expected {L} attention calls (one per layer), saw "
                                       f"{len(rec.calls)}; this architecture is not supported.")
                c = rec.calls[lay - 1]
                assert c is not None
                weights[lay] = first_token_attention(c.query, c.key, c.mask, first, c.scaling, c.position_bias)
            else:
                weights[lay] = outputs.attentions[lay - 1][torch.arange(len(idx), device=dev), :, first] \
                    .to(torch.float32).mean(dim=1)
        for (p, lay) in keys:
            h = outputs.last_hidden_state if hidden is None else hidden[lay]
            if p == "mean":
                v = mean_pool(h, pool_mask)
            elif p == "max":
                v = max_pool(h, pool_mask)
            elif p == "cls":
                v = cls_pool(h, attn_mask)
            elif p == "attention":
                v = attention_pool(h, weights[lay], pool_mask)
            elif p in custom:
                v = custom[p](h.to(torch.float32), attn_mask)
            else:
                assert encoder.native is not None
                v = _native_pool(encoder.native, h, attn_mask)
            arr = v.detach().to("cpu", torch.float32).numpy()
            if (p, lay) not in bufs:
                bufs[(p, lay)] = np.empty((n, arr.shape[1]), dtype=np.float32)
            bufs[(p, lay)][idx] = arr
        n_tokens += int(attn_mask.sum())
        start += len(idx)
        done += len(idx)
        if progress is not None:
            progress(done, n)
    for k, arr in bufs.items():
        if not np.isfinite(arr).all():
            raise FloatingPointError(f"encode: the model produced non-finite {k[0]} embeddings at layer {k[1]} "
                                     f"(dtype {_dtype_name(compute_dtype)}); try dtype='float32'.")
        out[k] = arr
    return {"truncated": toks.truncated, "n_tokens": n_tokens, "batch_size": batch_size,
            "batch_size_final": bs, "oom_halvings": halvings,
            "attention_source": "sdpa-capture" if capture else ("eager-attentions" if eager_attn else None)}
