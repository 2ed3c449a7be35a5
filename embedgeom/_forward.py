"""The batched forward pass behind :func:`embedgeom.encode`.

One run tokenises its texts once, sorts them by length, and for each batch pads it (with the special-token mask),
runs the model (halving the batch on out-of-memory) and pools every requested (pooling, layer) from that batch's
hidden states and attentions. The conventions it carries out are listed in :mod:`embedgeom.encoding`; the choice
of compute dtype and the embedding cache are :func:`embedgeom.encode`'s.

Precision: the compute dtype is the autocast dtype (autocast is off for float32), and every float32 matmul of the
pass is full IEEE float32 whatever the process allows elsewhere (``torch.set_float32_matmul_precision("high")``
would otherwise let CUDA use TF32, and "medium" let oneDNN use bfloat16, for matmuls that read as float32). The
compute dtype therefore names the precision of every vector, and the embedding cache keys vectors by it.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from . import _capture
from .loading import Encoder, NativePooling, _quiet_transformers
from .pooling import attention_pool, cls_pool, first_token_attention, max_pool, mean_pool

#: One embedding set: (pooling name, absolute hidden-state index).
Key = tuple[str, int]
Progress = Callable[[int, int], None]
#: A custom pooler as :class:`embedgeom.encoding.CustomPooler` describes it.
Pooler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: The float32 matmul precision of every forward pass (see the module docstring); part of every cache key.
FLOAT32_MATMUL = "ieee"
#: Models whose position ids are derived from the padding token by the model itself.
_PADDING_AWARE_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text",
                            "xmod", "roberta-prelayernorm", "ibert", "luke", "markuplm", "esm"}


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
    custom: Mapping[str, Pooler]

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


def _check_not_empty(texts: list[str], toks: _Tokens) -> None:
    empty = [i for i, sp in enumerate(toks.special) if all(sp)]
    if empty:
        shown = ", ".join(f"{i} ({texts[i][:30]!r})" for i in empty[:5])
        raise ValueError(f"texts: expected every text to contain at least one token, got {len(empty)} that "
                         f"tokenise to nothing (first: {shown}). Drop empty or whitespace-only texts.")


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


def _is_oom(err: BaseException) -> bool:
    """CUDA (or other accelerator) out-of-memory, which halving the batch can cure."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


@dataclass(frozen=True)
class _Run:
    """One forward run: the request's texts tokenised, the order they are batched in (longest first), the keys to
    pool, the compute dtype, and where attention weights come from (``capture``: recorded from SDPA by
    :mod:`embedgeom._capture`; ``eager_attn``: the model's own eager attentions)."""

    encoder: Encoder
    request: Request
    tokens: _Tokens
    order: np.ndarray
    keys: tuple[Key, ...]
    compute_dtype: torch.dtype
    capture: bool
    eager_attn: bool

    @property
    def attn_layers(self) -> list[int]:
        return sorted({lay for p, lay in self.keys if p == "attention"})

    @property
    def need_hidden(self) -> bool:
        """Whether any key needs a layer other than the last (the model then returns every hidden state)."""
        return sorted({lay for _, lay in self.keys}) != [self.encoder.num_layers]

    @property
    def attention_source(self) -> str | None:
        return "sdpa-capture" if self.capture else ("eager-attentions" if self.eager_attn else None)


def run_forward(encoder: Encoder, request: Request, keys: Sequence[Key], compute_dtype: torch.dtype,
                progress: Progress | None) -> tuple[dict[Key, np.ndarray], dict[str, Any]]:
    """Encode every text of ``request`` in ``compute_dtype`` and pool each of ``keys``.

    Returns the float32 (n, d) vectors by key, in the request's text order, and the run's meta (truncation count,
    tokens, batch sizes, out-of-memory halvings, attention source). ``progress(done, total)`` after each batch.
    """
    toks = _tokenise(encoder, request.texts, request.pairs, request.max_length)
    _check_not_empty(request.texts, toks)
    if toks.truncated:
        warnings.warn(f"{toks.truncated} of {len(request.texts)} texts were longer than max_length="
                      f"{request.max_length} tokens and were truncated.", TruncationWarning, stacklevel=3)
    model = encoder.model
    wants_attention = "attention" in {p for p, _ in keys}
    capture = wants_attention and getattr(model.config, "_attn_implementation", None) == _capture.IMPLEMENTATION
    run = _Run(encoder, request, toks, np.argsort([-len(ids) for ids in toks.input_ids], kind="stable"),
               tuple(keys), compute_dtype, capture, eager_attn=wants_attention and not capture)
    with _eager_attention(model, run.eager_attn), _ieee_float32_matmuls():
        return _forward_batches(run, progress)


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


def _forward_batches(run: _Run, progress: Progress | None) -> tuple[dict[Key, np.ndarray], dict[str, Any]]:
    """The batch loop: pad, forward (halving the batch on out-of-memory), pool, and place each batch's rows."""
    n = len(run.request.texts)
    bufs: dict[Key, np.ndarray] = {}
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
                              stacklevel=3)
                continue
            raise
        for k, arr in _pool_batch(run, outputs, rec, attn_mask, special).items():
            if k not in bufs:
                bufs[k] = np.empty((n, arr.shape[1]), dtype=np.float32)
            bufs[k][idx] = arr
        n_tokens += int(attn_mask.sum())
        start += len(idx)
        if progress is not None:
            progress(start, n)
    _check_finite(bufs, run.compute_dtype, run.encoder.model)
    return bufs, {"truncated": run.tokens.truncated, "n_tokens": n_tokens, "batch_size": run.request.batch_size,
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
    inputs = {k: v.to(run.encoder.device) for k, v in batch.items()}
    attn_mask = inputs["attention_mask"].bool()
    pos = _position_ids(run.encoder.model, attn_mask, side)
    if pos is not None:
        inputs["position_ids"] = pos
    return inputs, attn_mask, special


def _attention_weights(run: _Run, outputs: Any, rec: Any, attn_mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """Per attention-pooled layer: the first real token's attention to every token, averaged over heads."""
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


def _pool_batch(run: _Run, outputs: Any, rec: Any, attn_mask: torch.Tensor, special: torch.Tensor
                ) -> dict[Key, np.ndarray]:
    """Every key of the run pooled from one batch's outputs: float32 (batch, d) arrays on the CPU."""
    hidden = outputs.hidden_states if run.need_hidden else None
    pool_mask = attn_mask & ~special.to(run.encoder.device) if run.request.special_tokens == "exclude" else attn_mask
    weights = _attention_weights(run, outputs, rec, attn_mask)
    custom = run.request.custom
    out: dict[Key, np.ndarray] = {}
    for (p, lay) in run.keys:
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
            assert run.encoder.native is not None
            v = _native_pool(run.encoder.native, h, attn_mask)
        out[(p, lay)] = v.detach().to("cpu", torch.float32).numpy()
    return out


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
