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
  mean. The check and the dtype used are recorded in ``meta["precision_check"]`` and ``meta["compute_dtype"]``;
  the dtype that produced each vector set in ``meta["vector_dtypes"]`` (``"pooling@layer"`` -> dtype). One call
  never mixes precisions: when the check fails, every vector of the call is float32, and vectors the cache holds
  in the reduced dtype are not used (a :class:`PrecisionWarning` says how many). Float32 matmuls are full IEEE
  float32 (no TF32 or bfloat16 stand-ins; see :mod:`embedgeom._forward`), so the dtype names the precision.
* text pairs (``text_pairs=``) are joined by the tokenizer's own sentence-pair template, e.g.
  ``[CLS] a [SEP] b [SEP]`` with segment ids 0/1 for BERT; truncation ``longest_first``.
* ``prompt`` (e.g. ``"query: "``, or the name of a prompt a sentence-transformers checkpoint declares) is
  prepended to every text (not to second segments) before tokenisation, as sentence-transformers does; its tokens
  take part in pooling, except in ``native`` pooling where the checkpoint declares ``include_prompt: false`` (the
  prompt's tokens counted as sentence-transformers counts them). With no prompt given, a sentence-transformers
  checkpoint's ``default_prompt_name`` applies, as in sentence-transformers. The prompt text and name are recorded
  in ``meta`` and are part of every cache key;
* decoder-only (causal) models: the end-of-sequence token is appended to every text where the encoder says so
  (``Encoder.append_eos``, see :mod:`embedgeom.loading`), after truncation; ``last`` is the last real token's state
  under either padding side, ``mean``/``max`` pool the causal states; ``cls`` and ``attention`` (the first token
  of a causal model sees only itself) are refused, naming the poolings that apply.

Poolings are the registered poolers of :mod:`embedgeom.pooling` (``"all"``: every registered pooler that applies
to the model's kind and needs nothing the checkpoint must declare - mean, cls, max, attention for an encoder;
``native`` only when named). This module validates the call, applies the precision check and serves the embedding
cache; the batched forward pass, which hands each batch's token states to sinks (:class:`PooledSink` pools them),
is in :mod:`embedgeom._forward`; :func:`forward_to_sinks` runs it for other sinks (token-level measures).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch

from ._forward import FLOAT32_MATMUL, Key, Request, dtype_name, poolers_for, run_forward, run_sinks, truncation_count
from ._forward import BatchSizeWarning as BatchSizeWarning  # public here; raised by the forward pass
from ._forward import PooledSink as PooledSink  # public here: the sink behind encode()
from ._forward import Sink as Sink  # public here: what forward_to_sinks() feeds
from ._forward import TokenBatch as TokenBatch  # public here: what a sink receives per batch
from ._forward import TruncationWarning as TruncationWarning  # public here; raised by the forward pass
from .embedding_cache import EmbeddingCache, texts_hash
from .loading import Encoder, is_in_memory, load_encoder, tokenizer_fingerprint
from .options import parse_layers
from .pooling import POOLING_VERSION, get_pooler, pooler_names, resolve_poolings

SpecialTokens = Literal["include", "exclude"]
PaddingSide = Literal["right", "left"]


class PrecisionWarning(UserWarning):
    """``dtype="auto"``'s reduced precision failed its check: the whole call was computed in float32."""


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


def model_kind(encoder: Encoder) -> str:
    """The kind of model the poolers must apply to: ``"encoder"`` (bidirectional, including an encoder-decoder's
    encoder stack) or ``"decoder"`` (causal), as the encoder records it."""
    return getattr(encoder, "model_kind", None) or "encoder"


def as_encoder(encoder: Any) -> Encoder:
    """``encoder`` itself, or a model in memory (a ``SentenceTransformer`` or a ``(PreTrainedModel, tokenizer)``
    pair) loaded with :func:`embedgeom.load_encoder`'s defaults; anything else is one ValueError."""
    if isinstance(encoder, Encoder):
        return encoder
    if is_in_memory(encoder):
        return load_encoder(encoder)
    raise ValueError(f"encoder: expected an Encoder (embedgeom.load_encoder(...)), a SentenceTransformer or a "
                     f"(PreTrainedModel, tokenizer) pair, got {type(encoder).__name__}. Load a path or hub id with "
                     "embedgeom.load_encoder first.")


def resolve_prompt(encoder: Encoder, prompt: str | None) -> tuple[str, str | None]:
    """The prompt text to prepend and its name: ``prompt`` names one of the checkpoint's declared prompts, or is
    the text itself; None means the checkpoint's default prompt (sentence-transformers' ``default_prompt_name``), or
    none."""
    prompts = getattr(encoder, "prompts", None) or {}
    if prompt is None:
        name = getattr(encoder, "default_prompt_name", None)
        return (prompts[name], name) if name in prompts else ("", None)
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected a text such as 'query: ' or the name of a declared prompt "
                         f"({', '.join(prompts) or 'this model declares none'}), got {prompt!r}.")
    if prompt in prompts:
        return prompts[prompt], prompt
    return prompt, None


def _prompt_tokens(encoder: Encoder, prompt: str) -> int:
    """The prompt's length in tokens as sentence-transformers counts it (its tokenisation with special tokens, less
    a trailing special token), where the declared pooling leaves the prompt out; else 0."""
    if not prompt or encoder.native is None or encoder.native.include_prompt:
        return 0
    ids = encoder.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    trailing = bool(ids) and ids[-1] in set(getattr(encoder.tokenizer, "all_special_ids", ()) or ())
    return len(ids) - int(trailing)


def _normalise_poolings(poolings: str | Sequence[str], encoder: Encoder,
                        custom: Mapping[str, CustomPooler]) -> tuple[str, ...]:
    clash = [c for c in custom if c in pooler_names() or c == "all"]
    if clash:
        raise ValueError(f"custom_poolers: expected names that are not registered poolers, got {clash[0]!r}; name "
                         "yours differently.")
    kind = model_kind(encoder)
    out = resolve_poolings(poolings, kind=kind, declared=encoder.native is not None, extra=custom)
    for p in out:
        if p not in custom and get_pooler(p).declared and encoder.native is None:
            why = encoder.info.get("native_unavailable") or "it is not a sentence-transformers checkpoint"
            raise ValueError(f"poolings: {p!r} needs a checkpoint that declares its pooling; {encoder.spec} does "
                             f"not ({why}). Use {', '.join(pooler_names(kind, include_native=False))}.")
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




def _base_request(encoder: Encoder, texts: Any, text_pairs: Any, batch_size: int | None, max_length: int | None,
                  special_tokens: str, padding_side: str, prompt: str | None = None) -> Request:
    """The texts and the options every forward pass takes, checked (one clear error naming the first bad one);
    no poolings yet."""
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
    mlen = encoder.max_length if max_length is None else max_length
    if isinstance(mlen, bool) or not isinstance(mlen, int) or mlen < 2:
        raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}.")
    text, name = resolve_prompt(encoder, prompt)
    return Request(texts, pairs, (), mlen, special_tokens, padding_side, batch_size, {}, text,
                   _prompt_tokens(encoder, text), name)


def _request(encoder: Encoder, texts: Any, text_pairs: Any, poolings: str | Sequence[str],
             layers: str | int | Sequence[int], batch_size: int | None, max_length: int | None, special_tokens: str,
             padding_side: str, custom_poolers: Mapping[str, CustomPooler] | None, prompt: str | None = None
             ) -> Request:
    """encode()'s arguments checked (one clear error naming the first bad one) and resolved against ``encoder``."""
    custom = dict(custom_poolers or {})
    req = replace(_base_request(encoder, texts, text_pairs, batch_size, max_length, special_tokens, padding_side,
                                prompt), custom=custom)
    L = encoder.num_layers
    pools = _normalise_poolings(poolings, encoder, custom)
    lays = _normalise_layers(layers, L)
    # skipped by construction: each pooling at the layers its pooler is not defined at (attention at layer 0: no
    # attention there; CLS at layer 0: the [CLS] token's input embedding, identical for every text; native below
    # the last layer)
    poolers = poolers_for(req, pools)
    wanted = tuple((p, lay) for lay in lays for p in pools if poolers[p].at_layer(lay, L))
    if not wanted:
        rule = {"transformer": "a transformer layer (>= 1; layer 0 is the embedding output: no attention, the same "
                               "[CLS] vector for every text)", "last": f"the last layer ({L})"}
        need = "; ".join(f"{p} needs {rule[poolers[p].layers]}" for p in pools)
        raise ValueError(f"layers: no requested pooling is defined at layer(s) {', '.join(map(str, lays))}: {need}.")
    return replace(req, wanted=wanted)


def forward_to_sinks(
    encoder: Encoder,
    texts: Sequence[str],
    sinks: Sequence[Sink],
    *,
    text_pairs: Sequence[str] | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    special_tokens: SpecialTokens = "include",
    padding_side: PaddingSide = "right",
    progress: Callable[[int, int], None] | None = None,
    prompt: str | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Run the forward pass :func:`encode` runs (same tokenisation, truncation, padding, batching and precision
    pinning) over ``texts`` and hand each batch's token states to every sink (:class:`Sink`, receiving a
    :class:`TokenBatch`). Returns each sink's ``finish()`` result in the order of ``sinks``, and the pass's meta.

    The pass runs in the encoder's compute dtype: ``dtype="auto"``'s precision check and the embedding cache are
    :func:`encode`'s (pooled vectors) and do not apply here; load a float32 encoder where precision matters.
    ``meta["compute_dtype"]`` names the dtype used. ``prompt``: as for :func:`encode`.
    """
    encoder = as_encoder(encoder)
    req = _base_request(encoder, texts, text_pairs, batch_size, max_length, special_tokens, padding_side, prompt)
    if isinstance(sinks, Sink) or not all(isinstance(s, Sink) for s in sinks):
        raise ValueError("sinks: expected a list of sinks (objects with layers, attention_layers, accept and "
                         f"finish), got {type(sinks).__name__}.")
    results, run_meta = run_sinks(encoder, req, list(sinks), encoder.compute_dtype, progress, stacklevel=3)
    return results, {"model_spec": encoder.spec, "n": len(req.texts), "max_length": req.max_length,
                     "compute_dtype": dtype_name(encoder.compute_dtype), "special_tokens": req.special_tokens,
                     "pair_mode": "joined" if req.pairs is not None else "single", "padding_side": req.padding_side,
                     **_prompt_meta(encoder, req), **run_meta}


def _meta(encoder: Encoder, req: Request) -> dict[str, Any]:
    """How the vectors are produced, before the forward pass adds its own record (``Embeddings.meta``)."""
    return {
        "model_hash": encoder.weights_hash(),
        "tokenizer_hash": encoder.tokenizer_hash or tokenizer_fingerprint(encoder.tokenizer),
        "model_spec": encoder.spec, "texts_hash": texts_hash(req.texts, req.pairs),
        "n": len(req.texts), "max_length": req.max_length, "compute_dtype": dtype_name(encoder.compute_dtype),
        "special_tokens": req.special_tokens, "pair_mode": "joined" if req.pairs is not None else "single",
        "padding_side": req.padding_side, "native": encoder.native.describe() if encoder.native else None,
        "precision_check": None, **_prompt_meta(encoder, req),
    }


def _prompt_meta(encoder: Encoder, req: Request) -> dict[str, Any]:
    """What a call prepended and appended to its texts: the prompt text (and its declared name, when it is one) and
    whether the end-of-sequence token was appended."""
    return {"prompt": req.prompt, "prompt_name": req.prompt_name,
            "append_eos": bool(getattr(encoder, "append_eos", False))}


def _checked_low(encoder: Encoder, meta: dict[str, Any]) -> bool:
    """Reduced precision chosen by ``auto``: verified by the precision check before it is used or reused."""
    return encoder.dtype_policy == "auto" and meta["compute_dtype"] != "float32"


def _cache_for(cache: bool | str | os.PathLike | EmbeddingCache | None) -> EmbeddingCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return EmbeddingCache()
    if isinstance(cache, EmbeddingCache):
        return cache
    return EmbeddingCache(cache)


#: Fields of ``Embeddings.meta`` that are part of every cache key (with the dtype that produced the vector).
_KEY_META_FIELDS = ("model_hash", "texts_hash", "max_length", "special_tokens", "pair_mode", "padding_side")


class _CacheView:
    """The embedding cache as one encode() call uses it (``store`` None: no cache).

    Every key names the precision of its vector: the compute dtype that produced it (looked up under the dtype the
    call is about to use, stored under the dtype that computed it), whether ``auto`` checked that dtype, and the
    float32 matmul precision of the forward pass.
    """

    def __init__(self, store: EmbeddingCache | None, encoder: Encoder, req: Request, meta: dict[str, Any]) -> None:
        self.store = store
        self._encoder, self._req, self._meta = encoder, req, meta
        self._native_hash = encoder.native.fingerprint() if encoder.native is not None else None

    def key(self, k: Key, dtype: str) -> str:
        """Everything that changes the vector of pooling k[0] at layer k[1] computed in ``dtype`` (see
        :mod:`embedgeom.embedding_cache`)."""
        meta, custom = self._meta, self._req.custom
        pooler = None if k[0] in custom else get_pooler(k[0])
        return EmbeddingCache.key({**{f: meta[f] for f in _KEY_META_FIELDS}, "compute_dtype": dtype,
                                   "tokenizer_hash": meta["tokenizer_hash"], "pooling": k[0], "layer": k[1],
                                   "num_layers": self._encoder.num_layers,
                                   "native": self._native_hash if pooler is not None and pooler.declared else None,
                                   "custom": custom[k[0]].fingerprint if k[0] in custom else None,
                                   "precision_checked": self._encoder.dtype_policy == "auto" and dtype != "float32",
                                   "float32_matmul": FLOAT32_MATMUL, "pooling_version": POOLING_VERSION,
                                   **({"prompt": self._req.prompt} if self._req.prompt else {}),
                                   **({"append_eos": True} if meta.get("append_eos") else {}),
                                   **(pooler.cache_fields() if pooler is not None else {})})

    def lookup(self, keys: Sequence[Key], dtype: str, into: dict[Key, np.ndarray], dtypes: dict[Key, str]
               ) -> list[Key]:
        """Put the vectors the cache holds for ``keys`` computed in ``dtype`` into ``into`` (and ``dtype`` into
        ``dtypes``); return the keys still missing there."""
        if self.store is not None:
            for k in keys:
                hit = self.store.get(self.key(k, dtype))
                if hit is not None and hit.shape[0] == len(self._req.texts):
                    into[k], dtypes[k] = hit, dtype
        return [k for k in keys if k not in into]

    def record(self, computed: int) -> dict[str, Any]:
        """``meta["cache"]``: hits and misses among the wanted keys, and the directory."""
        return {"hits": len(self._req.wanted) - computed, "misses": computed,
                "dir": str(self.store.root) if self.store else None}


def encode(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    poolings: str | Sequence[str] = "all",
    layers: str | int | Sequence[int] = (-1,),
    text_pairs: Sequence[str] | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    special_tokens: SpecialTokens = "include",
    padding_side: PaddingSide = "right",
    cache: bool | str | os.PathLike | EmbeddingCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    custom_poolers: Mapping[str, CustomPooler] | None = None,
    prompt: str | None = None,
) -> Embeddings:
    """Encode ``texts`` once and return every requested pooling at every requested layer.

    ``poolings``: names of registered poolers (:func:`embedgeom.pooling.pooler_names`: ``mean, cls, max,
    attention, native`` and any registered since) or ``"all"`` (default: every registered pooler that applies to
    the model and needs no declaration - ``mean, cls, max, attention`` for an encoder; ``native`` only when named);
    a pooler that does not apply to the model is refused, naming those that do. ``layers``: hidden-state
    indices (``-1`` = last, ``0`` = embeddings) or ``"all"``; each pooling is computed at the layers its pooler is
    defined at (attention and CLS at layers >= 1, native at the last). ``text_pairs``: second segments, joined with
    the tokenizer's pair template. ``cache``: True for the default on-disk cache, a directory, or None.
    ``progress(done, total)`` is called after each batch. ``batch_size`` defaults to 32 on CPU (less
    padding; fastest measured) and 128 on GPUs. ``custom_poolers`` adds named poolings computed from the
    same hidden states (e.g. the reference study's random attention head, see :mod:`embedgeom.reference.protocols`).
    ``prompt``: a text prepended to every text, or the name of a prompt the checkpoint declares (None: the
    checkpoint's default prompt, if any). ``encoder``: a loaded Encoder, or a model in memory (a
    ``SentenceTransformer`` or a ``(PreTrainedModel, tokenizer)`` pair). See the module docstring for every
    convention.
    """
    encoder = as_encoder(encoder)
    req = _request(encoder, texts, text_pairs, poolings, layers, batch_size, max_length, special_tokens,
                   padding_side, custom_poolers, prompt)
    n = len(req.texts)
    meta = _meta(encoder, req)
    view = _CacheView(_cache_for(cache), encoder, req, meta)
    vectors: dict[Key, np.ndarray] = {}
    dtypes: dict[Key, str] = {}  # the compute dtype that produced each vector
    missing = view.lookup(req.wanted, meta["compute_dtype"], vectors, dtypes)
    run_meta: dict[str, Any] | None = None
    if _checked_low(encoder, meta) and not missing:  # every vector came from the cache, stored after the check
        meta["precision_check"] = {"dtype": meta["compute_dtype"], "passed": True, "used": meta["compute_dtype"],
                                   "from_cache": True}
    elif _checked_low(encoder, meta):
        check, probe_out = _check_precision(encoder, req, missing)
        meta["precision_check"] = check
        if not check["passed"]:
            missing = _fall_back_to_float32(view, req, meta, vectors, dtypes)
        if probe_out is not None and missing:  # the probe was every text: its vectors are the answer
            chosen, run_meta = probe_out[check["used"]]
            for k in missing:
                if k in chosen:
                    vectors[k], dtypes[k] = chosen[k], check["used"]
            if progress is not None and all(k in vectors for k in missing):
                progress(n, n)
    computed = list(missing)
    missing = [k for k in missing if k not in vectors]
    meta["cache"] = view.record(len(computed))
    if missing:
        got, run_meta = run_forward(encoder, req, missing, getattr(torch, meta["compute_dtype"]), progress)
        vectors.update(got)
        dtypes.update(dict.fromkeys(got, meta["compute_dtype"]))
    if run_meta is not None:
        meta.update(run_meta)
    else:  # every vector came from the cache: count (and warn about) truncation as the forward pass would have
        meta["truncated"] = truncation_count(encoder, req)
        if meta["truncated"]:
            warnings.warn(f"{meta['truncated']} of {n} texts were longer than max_length={req.max_length} tokens and "
                          "were truncated (vectors from the cache).", TruncationWarning, stacklevel=2)
    meta["vector_dtypes"] = _one_precision(dtypes, req.wanted, meta["compute_dtype"])
    if view.store is not None:  # put from here, as before: a CacheWarning about writing names encode's caller
        for k in computed:
            view.store.put(view.key(k, dtypes[k]), vectors[k],
                           {**meta, "compute_dtype": dtypes[k], "pooling": k[0], "layer": k[1]})
    if not computed and progress is not None:
        progress(n, n)
    return Embeddings({k: vectors[k] for k in req.wanted}, n, encoder.num_layers, meta)


def _fall_back_to_float32(view: _CacheView, req: Request, meta: dict[str, Any], vectors: dict[Key, np.ndarray],
                          dtypes: dict[Key, str]) -> list[Key]:
    """The precision check failed: the whole call is float32. Vectors already taken from the cache in the reduced
    dtype are dropped (one call never mixes precisions), float32 ones the cache holds are taken, and a
    :class:`PrecisionWarning` says so. Returns the keys still to compute, all in float32."""
    check, low = meta["precision_check"], meta["compute_dtype"]
    dropped = len(vectors)
    vectors.clear()
    dtypes.clear()
    meta["compute_dtype"] = "float32"
    check["cached_low_dropped"] = dropped
    missing = view.lookup(req.wanted, "float32", vectors, dtypes)
    ratio = check["worst_ratio"]
    how = (f"median error {ratio:.3g} of the spread at {check['worst']}" if ratio is not None
           else f"non-finite or unbounded error at {check['worst']}")
    reused = len(req.wanted) - len(missing)
    warnings.warn(f"{low} failed the precision check ({how}; tolerance {check['tolerance']}): every vector set of "
                  f"this call is float32 ({len(missing)} computed in float32"
                  f"{f', {reused} from the float32 cache' if reused else ''}"
                  f"{f'; {dropped} cached in {low} not used' if dropped else ''}).", PrecisionWarning, stacklevel=3)
    return missing


def _one_precision(dtypes: dict[Key, str], wanted: Sequence[Key], compute_dtype: str) -> dict[str, str]:
    """``meta["vector_dtypes"]``: the dtype of each vector set, checked to be the call's one compute dtype."""
    mixed = {dtypes[k] for k in wanted} - {compute_dtype}
    if mixed:  # never: a result in two precisions would compare numbers that are not comparable
        raise RuntimeError(f"encode: vectors in {sorted(mixed)} in a {compute_dtype} result; please report this.")
    return {f"{p}@{lay}": dtypes[(p, lay)] for p, lay in wanted}


#: Texts (evenly spaced over the input) encoded in both the reduced and float32 precision to check ``auto``.
PRECISION_CHECK_TEXTS = 64
#: Largest accepted ratio, for every requested (pooling, layer), of the median distance between a text's
#: reduced-precision and float32 vectors to the median distance of the float32 vectors from their mean (the
#: spread the metrics measure). Measured in bfloat16 on CPU: 0.009 for MiniLM's last layer
#: (reports/benchmarks/encode_cpu.md); 1,800-7,100 for a paper-preset MLM encoder after 500 steps, whose vectors share
#: one large component (reports/cpu-study/tables/tables.md).
PRECISION_TOLERANCE = 0.02


def _check_precision(encoder: Encoder, req: Request, keys: list[Key]
                     ) -> tuple[dict[str, Any], dict[str, tuple[dict[Key, np.ndarray], dict[str, Any]]] | None]:
    """Encode a probe of the texts in the encoder's reduced compute dtype and in float32 and compare.

    Returns the check's record and, when the probe was every text, both encodings (so nothing is redone).
    """
    n = len(req.texts)
    idx = np.unique(np.linspace(0, n - 1, min(n, PRECISION_CHECK_TEXTS)).round().astype(int))
    probe = req.subset(idx)
    results: dict[str, tuple[dict[Key, np.ndarray], dict[str, Any]]] = {}
    low_name = dtype_name(encoder.compute_dtype)
    nonfinite = None
    for dtype in (encoder.compute_dtype, torch.float32):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # warned about once, by the full pass
            try:
                results[dtype_name(dtype)] = run_forward(encoder, probe, keys, dtype, None)
            except FloatingPointError as err:  # the reduced precision overflows: float32 is the answer
                if dtype == torch.float32:
                    raise
                nonfinite = str(err)
    if nonfinite is None:
        worst, worst_key = _worst_error_ratio(results[low_name][0], results["float32"][0], keys)
    else:
        worst, worst_key = float("inf"), keys[0]
    passed = bool(worst <= PRECISION_TOLERANCE)
    record = {"dtype": low_name, "texts": len(idx), "tolerance": PRECISION_TOLERANCE,
              "worst_ratio": worst if np.isfinite(worst) else None, "worst": f"{worst_key[0]}@{worst_key[1]}",
              "passed": passed, "used": low_name if passed else "float32"}
    if n == 1 and not passed:
        record["note"] = "a single text has no spread to compare the error with; float32 used"
    if nonfinite is not None:
        record["note"] = f"non-finite vectors in {low_name}; float32 used"
    return record, (results if len(idx) == n else None)


def _worst_error_ratio(low: dict[Key, np.ndarray], high: dict[Key, np.ndarray], keys: list[Key]
                       ) -> tuple[float, Key]:
    """The largest, over ``keys``, median per-text distance between the reduced-precision and float32 vectors
    relative to the median distance of the float32 vectors from their mean; and the key where it occurs."""
    worst, worst_key = 0.0, keys[0]
    for k in keys:
        a, b = low[k].astype(np.float64), high[k].astype(np.float64)
        err = float(np.median(np.linalg.norm(a - b, axis=1)))
        spread = float(np.median(np.linalg.norm(b - b.mean(axis=0), axis=1)))
        ratio = err / spread if spread > 0 else (0.0 if err == 0 else float("inf"))
        if ratio > worst or not np.isfinite(ratio):
            worst, worst_key = ratio, k
    return worst, worst_key
