"""The batched forward pass behind :func:`embedgeom.encode`.

One run tokenises its texts once, sorts them by length, and for each batch pads it (with the special-token mask),
runs the model (halving the batch on out-of-memory) and hands the batch's token states to its sinks as one
:class:`TokenBatch`: the hidden states of the layers the sinks need, the attention, special-token and pooling masks,
the token ids, the text indices of the rows and, where a sink needs them, the first real token's attention rows.
A sink (:class:`Sink`: ``accept(batch)`` per batch, ``finish()`` once) turns them into its result; the loop knows
no pooling, metric or storage. :class:`PooledSink` pools every requested (pooling, layer) with the registered
poolers (:mod:`embedgeom.pooling`) into (n, d) arrays - what :func:`embedgeom.encode` returns. The conventions it
carries out are listed in :mod:`embedgeom.encoding`; the choice of compute dtype and the embedding cache are
:func:`embedgeom.encode`'s.

Precision: the compute dtype is the autocast dtype (autocast is off for float32), and every float32 matmul of the
pass is full IEEE float32 whatever the process allows elsewhere (``torch.set_float32_matmul_precision("high")``
would otherwise let CUDA use TF32, and "medium" let oneDNN use bfloat16, for matmuls that read as float32). The
compute dtype therefore names the precision of every vector, and the embedding cache keys vectors by it.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from . import _capture
from .loading import Encoder, _quiet_transformers
from .pooling import Pooler as RegisteredPooler
from .pooling import PoolInput, caller_pooler, first_token_attention, get_pooler

#: One embedding set: (pooling name, absolute hidden-state index).
Key = tuple[str, int]
Progress = Callable[[int, int], None]
#: A caller's own pooler as :class:`embedgeom.encoding.CustomPooler` describes it.
CustomFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: The float32 matmul precision of every forward pass (see the module docstring); part of every cache key.
FLOAT32_MATMUL = "ieee"
#: Models whose position ids are derived from the padding token by the model itself.
_PADDING_AWARE_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text",
                            "xmod", "roberta-prelayernorm", "ibert", "luke", "markuplm", "esm"}
#: Models with relative positions only (no absolute position ids): left padding changes no distance between real
#: tokens, so it needs no position ids.
_RELATIVE_POSITIONS = {"t5", "mt5", "umt5", "longt5"}


class TruncationWarning(UserWarning):
    """Some texts were longer than max_length and were truncated."""

    __module__ = "embedgeom.encoding"  # public as embedgeom.encoding.TruncationWarning


class BatchSizeWarning(UserWarning):
    """The GPU ran out of memory and the batch size was halved."""

    __module__ = "embedgeom.encoding"  # public as embedgeom.encoding.BatchSizeWarning


@dataclass(frozen=True)
class Request:
    """A validated :func:`embedgeom.encode` call: the texts (and second segments), the (pooling, layer) sets wanted
    in the order they are returned, and every option that changes a vector."""

    texts: list[str]
    pairs: list[str] | None
    wanted: tuple[Key, ...]
    max_length: int
    special_tokens: str
    padding_side: str
    batch_size: int
    custom: Mapping[str, CustomFn]
    #: Text prepended to every text (not to second segments); "" for none.
    prompt: str = ""
    #: How many leading real tokens are the prompt's, as sentence-transformers counts them (for a declared pooling
    #: with ``include_prompt: false``); 0 for none.
    prompt_tokens: int = 0
    #: The declared prompt's name when ``prompt`` is one (sentence-transformers checkpoints), else None.
    prompt_name: str | None = None

    def subset(self, idx: Sequence[int]) -> Request:
        """The same request for the texts (and pairs) at ``idx``."""
        return replace(self, texts=[self.texts[i] for i in idx],
                       pairs=[self.pairs[i] for i in idx] if self.pairs is not None else None)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class _Tokens:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    special: list[list[int]]
    truncated: int


def _tokenise(encoder: Encoder, texts: list[str], pairs: list[str] | None, max_length: int, prompt: str = ""
              ) -> _Tokens:
    """Token ids, segment ids and special-token masks of ``prompt + text`` (and its pair), truncated to
    ``max_length`` tokens; with the encoder's ``append_eos``, the end-of-sequence token is appended after
    truncation (so it is always there) unless the text already ends with it."""
    tok = encoder.tokenizer
    common = {"add_special_tokens": True, "return_special_tokens_mask": True, "return_attention_mask": False}
    if prompt:
        texts = [prompt + t for t in texts]
    eos = tok.eos_token_id if getattr(encoder, "append_eos", False) else None
    limit = max_length - 1 if eos is not None else max_length
    with _quiet_transformers():
        full = tok(texts, pairs, truncation=False, **common)
        lengths = [len(ids) for ids in full["input_ids"]]
        truncated = sum(n > limit for n in lengths)
        enc = tok(texts, pairs, truncation="longest_first" if pairs is not None else True,
                  max_length=limit, **common) if truncated else full
    ids, types, special = enc["input_ids"], enc.get("token_type_ids"), enc["special_tokens_mask"]
    if eos is not None:
        ids, special = [list(i) for i in ids], [list(sp) for sp in special]
        types = [list(t) for t in types] if types is not None else None
        for r, row in enumerate(ids):
            if not row or row[-1] != eos:
                row.append(eos)
                special[r].append(1)
                if types is not None:
                    types[r].append(types[r][-1] if types[r] else 0)
    return _Tokens(ids, types, special, truncated)


def truncation_count(encoder: Encoder, request: Request) -> int:
    """How many of the request's texts the forward pass truncates at its ``max_length`` (tokenisation only)."""
    pairs = None if request.pairs is None else list(request.pairs)
    return _tokenise(encoder, list(request.texts), pairs, request.max_length, request.prompt).truncated


def _check_not_empty(texts: list[str], toks: _Tokens) -> None:
    empty = [i for i, sp in enumerate(toks.special) if all(sp)]
    if empty:
        shown = ", ".join(f"{i} ({texts[i][:30]!r})" for i in empty[:5])
        raise ValueError(f"texts: expected every text to contain at least one token, got {len(empty)} that "
                         f"tokenise to nothing (first: {shown}). Drop empty or whitespace-only texts.")


def _position_ids(model: Any, mask: torch.Tensor, padding_side: str) -> torch.Tensor | None:
    """Mask-derived position ids for left padding (None where the default is already right)."""
    if padding_side == "right" or model.config.model_type in _PADDING_AWARE_POSITIONS | _RELATIVE_POSITIONS:
        return None
    if "position_ids" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"padding_side: left padding needs position ids, which {type(model).__name__} does not "
                         "accept. Use padding_side='right'.")
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _is_oom(err: BaseException) -> bool:
    """CUDA (or other accelerator) out-of-memory, which halving the batch can cure."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


@dataclass(frozen=True)
class TokenBatch:
    """One batch of the forward pass, as every sink receives it (tensors on the model's device; read, never write).

    ``rows``: (b,) the indices, in the request's texts, of the batch's rows (batches follow length order, not input
    order); ``input_ids``: (b, L) token ids, padded on the request's side; ``attention_mask``: (b, L) bool, real
    tokens; ``special_mask``: (b, L) bool, the tokenizer's special tokens ([CLS], [SEP]); ``pool_mask``: (b, L) bool,
    the tokens pooling runs over (the real tokens, less the special ones under ``special_tokens="exclude"``);
    ``hidden``: absolute hidden-state index (0 = embedding output) -> (b, L, d) states in the compute dtype, for the
    layers the sinks asked for; ``attention_rows``: layer -> (b, L) float32, the first real token's attention to
    every token at that layer, averaged over heads, for the layers the sinks asked for (empty otherwise).
    """

    rows: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    special_mask: torch.Tensor
    pool_mask: torch.Tensor
    hidden: Mapping[int, torch.Tensor]
    attention_rows: Mapping[int, torch.Tensor] = field(default_factory=dict)
    #: (b, L) bool, the leading real tokens that are the request's prompt as sentence-transformers counts them
    #: (None without a prompt).
    prompt_mask: torch.Tensor | None = None

    def pool_input(self, layer: int, native: Any = None) -> PoolInput:
        """What a pooler sees of this batch at ``layer`` (see :class:`embedgeom.pooling.PoolInput`)."""
        return PoolInput(self.hidden[layer], self.attention_mask, self.pool_mask, self.attention_rows.get(layer),
                         native, self.prompt_mask)


@runtime_checkable
class Sink(Protocol):
    """Where the forward pass's token states go: ``accept`` is called once per batch (in length order), then
    ``finish`` once, whose return value is the sink's result. ``layers``: the absolute hidden-state indices the
    sink reads from :attr:`TokenBatch.hidden`; ``attention_layers``: the layers whose first-token attention rows it
    reads from :attr:`TokenBatch.attention_rows` (the pass only computes what some sink asks for)."""

    @property
    def layers(self) -> Collection[int]: ...

    @property
    def attention_layers(self) -> Collection[int]: ...

    def accept(self, batch: TokenBatch) -> None: ...

    def finish(self) -> Any: ...


class PooledSink:
    """Every (pooling, layer) in ``keys`` pooled by its :class:`embedgeom.pooling.Pooler` into a float32 (n, d)
    array in the request's text order (``finish`` returns them by key). ``native``: the checkpoint's declared
    sentence-transformers modules, for poolers that need them."""

    def __init__(self, n: int, keys: Sequence[Key], poolers: Mapping[str, RegisteredPooler], native: Any = None
                 ) -> None:
        self.n, self.keys, self.poolers, self.native = n, tuple(keys), dict(poolers), native
        self.layers = frozenset(lay for _, lay in self.keys)
        self.attention_layers = frozenset(lay for p, lay in self.keys if "attention_row" in self.poolers[p].needs)
        self._bufs: dict[Key, np.ndarray] = {}

    def accept(self, batch: TokenBatch) -> None:
        for p, lay in self.keys:
            arr = self.poolers[p](batch.pool_input(lay, self.native)).detach().to("cpu", torch.float32).numpy()
            if (p, lay) not in self._bufs:
                self._bufs[(p, lay)] = np.empty((self.n, arr.shape[1]), dtype=np.float32)
            self._bufs[(p, lay)][batch.rows] = arr

    def finish(self) -> dict[Key, np.ndarray]:
        return self._bufs


def poolers_for(request: Request, names: Collection[str]) -> dict[str, RegisteredPooler]:
    """The pooler of each name: the request's own (``custom_poolers``) or the registered one."""
    return {p: caller_pooler(p, request.custom[p]) if p in request.custom else get_pooler(p) for p in names}


@dataclass(frozen=True)
class _Run:
    """One forward run: the request's texts tokenised, the order they are batched in (longest first), its sinks and
    the layers and attention rows they need, the compute dtype, and where attention weights come from
    (``capture``: recorded from SDPA by :mod:`embedgeom._capture`; ``eager_attn``: the model's own eager
    attentions)."""

    encoder: Encoder
    request: Request
    tokens: _Tokens
    order: np.ndarray
    sinks: tuple[Sink, ...]
    layers: tuple[int, ...]
    attn_layers: tuple[int, ...]
    compute_dtype: torch.dtype
    capture: bool
    eager_attn: bool
    stacklevel: int

    @property
    def need_hidden(self) -> bool:
        """Whether any sink needs a layer other than the last (the model then returns every hidden state)."""
        return bool(set(self.layers) - {self.encoder.num_layers})

    @property
    def attention_source(self) -> str | None:
        return "sdpa-capture" if self.capture else ("eager-attentions" if self.eager_attn else None)


def run_forward(encoder: Encoder, request: Request, keys: Sequence[Key], compute_dtype: torch.dtype,
                progress: Progress | None) -> tuple[dict[Key, np.ndarray], dict[str, Any]]:
    """Encode every text of ``request`` in ``compute_dtype`` and pool each of ``keys`` (a :class:`PooledSink`).

    Returns the float32 (n, d) vectors by key, in the request's text order, and the run's meta (truncation count,
    tokens, batch sizes, out-of-memory halvings, attention source). ``progress(done, total)`` after each batch.
    Non-finite vectors raise FloatingPointError naming the likely cause.
    """
    sink = PooledSink(len(request.texts), keys, poolers_for(request, {p for p, _ in keys}), encoder.native)
    (vectors,), meta = run_sinks(encoder, request, (sink,), compute_dtype, progress, stacklevel=4)
    _check_finite(vectors, compute_dtype, encoder.model)
    return vectors, meta


def run_sinks(encoder: Encoder, request: Request, sinks: Sequence[Sink], compute_dtype: torch.dtype,
              progress: Progress | None, *, stacklevel: int = 3) -> tuple[list[Any], dict[str, Any]]:
    """Run the forward pass over every text of ``request`` in ``compute_dtype`` and hand each batch to every sink.

    Returns each sink's ``finish()`` result (in the order of ``sinks``) and the run's meta (as :func:`run_forward`).
    ``stacklevel``: frames from here to the caller the warnings (truncation, batch halving) should name.
    """
    if not sinks:
        raise ValueError("sinks: expected at least one sink, got none.")
    L = encoder.num_layers
    layers = sorted({int(lay) for s in sinks for lay in s.layers})
    attn_layers = sorted({int(lay) for s in sinks for lay in s.attention_layers})
    bad = [lay for lay in layers if not 0 <= lay <= L] + [lay for lay in attn_layers if not 1 <= lay <= L]
    if bad:
        raise ValueError(f"sinks: expected hidden-state indices in [0, {L}] (attention rows: [1, {L}]), got {bad[0]}.")
    toks = _tokenise(encoder, request.texts, request.pairs, request.max_length, request.prompt)
    _check_not_empty(request.texts, toks)
    if toks.truncated:
        warnings.warn(f"{toks.truncated} of {len(request.texts)} texts were longer than max_length="
                      f"{request.max_length} tokens and were truncated.", TruncationWarning, stacklevel=stacklevel)
    model = encoder.model
    capture = bool(attn_layers) and getattr(model.config, "_attn_implementation", None) == _capture.IMPLEMENTATION
    run = _Run(encoder, request, toks, np.argsort([-len(ids) for ids in toks.input_ids], kind="stable"),
               tuple(sinks), tuple(layers), tuple(attn_layers), compute_dtype, capture,
               eager_attn=bool(attn_layers) and not capture, stacklevel=stacklevel)
    with _eager_attention(model, run.eager_attn), _ieee_float32_matmuls():
        meta = _forward_batches(run, progress)
    return [s.finish() for s in run.sinks], meta


def _matmul_backends() -> list[Any]:
    """The backends whose float32 matmul precision torch lets a process lower (CUDA: TF32, oneDNN: bfloat16)."""
    return [b for b in (torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None))
            if b is not None and hasattr(b, "fp32_precision")]


@contextlib.contextmanager
def _ieee_float32_matmuls() -> Iterator[None]:
    """Full float32 matmuls for the block (:data:`FLOAT32_MATMUL`), the process's settings restored afterwards."""
    backends = _matmul_backends()
    if not backends:  # torch without per-backend settings: the legacy switch
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before)
        return
    before = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = FLOAT32_MATMUL
    try:
        yield
    finally:
        for b, old in zip(backends, before, strict=True):
            b.fp32_precision = old


@contextlib.contextmanager
def _eager_attention(model: Any, eager: bool) -> Iterator[None]:
    """Eager attention for this model only, for this run only (restored afterwards), when ``eager`` is set."""
    before = getattr(model.config, "_attn_implementation", None)
    switch = eager and before != "eager"
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def _forward_batches(run: _Run, progress: Progress | None) -> dict[str, Any]:
    """The batch loop: pad, forward (halving the batch on out-of-memory), and hand each batch to every sink."""
    n = len(run.request.texts)
    n_tokens = halvings = start = 0
    bs = run.request.batch_size
    dev = run.encoder.device
    autocast = torch.autocast(device_type=dev.type, dtype=run.compute_dtype,
                              enabled=run.compute_dtype != torch.float32)
    while start < n:
        idx = run.order[start : start + bs]
        inputs, attn_mask, special = _padded_batch(run, idx)
        try:
            recorder = _capture.Recorder(frozenset(run.attn_layers)) if run.capture else contextlib.nullcontext()
            with torch.inference_mode(), autocast, recorder as rec:
                outputs = run.encoder.model(**inputs, output_hidden_states=run.need_hidden,
                                            output_attentions=run.eager_attn, return_dict=True)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if _is_oom(err) and bs > 1:
                torch.cuda.empty_cache()
                bs = max(1, bs // 2)
                halvings += 1
                warnings.warn(f"GPU out of memory: batch size halved to {bs} and continuing.", BatchSizeWarning,
                              stacklevel=run.stacklevel + 1)
                continue
            raise
        batch = _token_batch(run, idx, inputs, outputs, rec, attn_mask, special)
        for sink in run.sinks:
            sink.accept(batch)
        n_tokens += int(attn_mask.sum())
        start += len(idx)
        if progress is not None:
            progress(start, n)
    return {"truncated": run.tokens.truncated, "n_tokens": n_tokens, "batch_size": run.request.batch_size,
            "batch_size_final": bs, "oom_halvings": halvings, "attention_source": run.attention_source}


def _padded_batch(run: _Run, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The model inputs of the texts at ``idx`` (padded on the request's side, on the device, with mask-derived
    position ids where left padding needs them), their attention mask (bool, on the device) and their
    special-token mask (bool, on the CPU)."""
    toks, side = run.tokens, run.request.padding_side
    feats = {"input_ids": [toks.input_ids[i] for i in idx]}
    if toks.token_type_ids is not None:
        feats["token_type_ids"] = [toks.token_type_ids[i] for i in idx]
    with _quiet_transformers():
        batch = run.encoder.tokenizer.pad(feats, padding=True, return_tensors="pt", padding_side=side)
    width = batch["input_ids"].shape[1]
    special = torch.zeros((len(idx), width), dtype=torch.bool)
    for r, sp in enumerate(toks.special[i] for i in idx):
        s = torch.tensor(sp, dtype=torch.bool)
        if side == "right":
            special[r, : len(sp)] = s
        else:
            special[r, width - len(sp):] = s
    accepts = inspect.signature(run.encoder.model.forward).parameters
    inputs = {k: v.to(run.encoder.device) for k, v in batch.items() if k != "token_type_ids" or k in accepts}
    attn_mask = inputs["attention_mask"].bool()
    pos = _position_ids(run.encoder.model, attn_mask, side)
    if pos is not None:
        inputs["position_ids"] = pos
    return inputs, attn_mask, special


def _attention_weights(run: _Run, outputs: Any, rec: Any, attn_mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """Per layer some sink asked for: the first real token's attention to every token, averaged over heads."""
    L = run.encoder.num_layers
    first = attn_mask.to(torch.int8).argmax(dim=1)
    weights: dict[int, torch.Tensor] = {}
    for lay in run.attn_layers:
        if run.capture:
            if len(rec.calls) != L:
                raise RuntimeError(f"attention pooling: expected {L} attention calls (one per layer), saw "
                                   f"{len(rec.calls)}; this architecture is not supported.")
            c = rec.calls[lay - 1]
            assert c is not None
            weights[lay] = first_token_attention(c.query, c.key, c.mask, first, c.scaling, c.position_bias)
        else:
            rows = torch.arange(len(attn_mask), device=run.encoder.device)
            weights[lay] = outputs.attentions[lay - 1][rows, :, first].to(torch.float32).mean(dim=1)
    return weights


def _token_batch(run: _Run, idx: np.ndarray, inputs: dict[str, torch.Tensor], outputs: Any, rec: Any,
                 attn_mask: torch.Tensor, special: torch.Tensor) -> TokenBatch:
    """One batch's outputs as the sinks see them: the requested layers' states, the masks, the attention rows."""
    if run.need_hidden:
        hidden = {lay: outputs.hidden_states[lay] for lay in run.layers}
    else:
        hidden = {lay: outputs.last_hidden_state for lay in run.layers}  # the last layer only (or none)
    special = special.to(run.encoder.device)
    pool_mask = attn_mask & ~special if run.request.special_tokens == "exclude" else attn_mask
    prompt_mask = None
    if run.request.prompt_tokens:
        first = attn_mask.to(torch.int8).argmax(dim=1, keepdim=True)
        pos = torch.arange(attn_mask.shape[1], device=attn_mask.device).unsqueeze(0)
        prompt_mask = attn_mask & (pos < first + run.request.prompt_tokens)
    return TokenBatch(idx, inputs["input_ids"], attn_mask, special, pool_mask, hidden,
                      _attention_weights(run, outputs, rec, attn_mask), prompt_mask)


def _check_finite(vectors: dict[Key, np.ndarray], compute_dtype: torch.dtype, model: Any) -> None:
    for k, arr in vectors.items():
        if not np.isfinite(arr).all():
            what = (f"encode: the model produced non-finite {k[0]} embeddings at layer {k[1]} "
                    f"(dtype {dtype_name(compute_dtype)})")
            if compute_dtype != torch.float32:
                raise FloatingPointError(f"{what}; try dtype='float32'.")
            bad = [name for name, t in model.state_dict().items()
                   if t.is_floating_point() and not bool(torch.isfinite(t).all())]
            if bad:
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                raise FloatingPointError(f"{what}: its weights are not finite ({len(bad)} tensors hold NaN or inf: "
                                         f"{shown}). Check the checkpoint's weights; float32 cannot repair them.")
            raise FloatingPointError(f"{what}: the weights are finite but the activations overflow even in float32. "
                                     "Check the checkpoint's weights (their scale) and its config.")
