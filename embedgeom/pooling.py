"""Poolers: mask-correct pooling of token hidden states into one vector per text, and the registry of poolers.

Conventions (they change numbers):

* ``mask`` (b, L) bool marks the tokens that take part. For ``mean``/``max``/``attention`` it is the real
  (non-padding) tokens, with special tokens ([CLS], [SEP]) included by default (as sentence-transformers
  does) or excluded on request - the caller builds the mask.
* Pooling runs in float32 whatever the hidden-state dtype (bf16/fp16 autocast outputs are upcast), and never
  writes into the model's output tensors.
* A row with no token in its mask is an error, never a silent zero or -inf vector.

The registry: every pooling :func:`embedgeom.encode` computes is a :class:`Pooler` registered here, with its name,
its function (called on a :class:`PoolInput` per layer and batch), the model kinds it applies to (``"encoder"``:
bidirectional; ``"decoder"``: causal), what it needs (hidden states; the first token's attention row; the
checkpoint's declared sentence-transformers modules), the layers it is defined at, a one-line definition and a
version that enters the embedding-cache key. The built-ins are ``mean`` and ``max`` (every model), ``cls`` and
``attention`` (bidirectional encoders: a causal model's first token sees only itself, so they are refused there),
``last`` (causal models: the last real token, the only one that has seen the whole text) and ``native`` (models whose
sentence-transformers checkpoint declares its pooling, including ``lasttoken`` and ``weightedmean``). Add one with
:func:`register_pooler` (tests: :func:`registered_pooler`).

``"all"`` means one thing everywhere: every registered pooler that applies to the model's kind and needs nothing
the checkpoint must declare, in registration order - for an encoder the four parameter-free poolings ``mean, cls,
max, attention`` and for a decoder-only model ``mean, max, last`` (plus any pooler registered since). ``native`` is
never part of ``"all"``; name it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Pooling = Literal["mean", "cls", "max", "attention", "native", "last"]
ModelKind = Literal["encoder", "decoder"]
#: The model kinds a pooler can apply to: bidirectional encoders and causal (decoder-only) models.
MODEL_KINDS: tuple[str, ...] = ("encoder", "decoder")
#: What a pooler can need besides the model's hidden states (always given).
NEEDS: tuple[str, ...] = ("hidden", "attention_row", "native")
#: The layers a pooler is defined at: every hidden-state index, the transformer layers only (>= 1), the last only.
LAYER_RULES: tuple[str, ...] = ("any", "transformer", "last")
#: Version of the pooling code, part of every embedding-cache key: bump it whenever a change here (or in how
#: :mod:`embedgeom.encoding` feeds these functions) changes a vector, so no cached vector from older code is served.
#: A single pooler's change bumps that pooler's own :attr:`Pooler.version` instead.
POOLING_VERSION = 1


def _check(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if hidden.ndim != 3:
        raise ValueError(f"hidden: expected (batch, tokens, dim) hidden states, got shape {tuple(hidden.shape)}.")
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask: expected shape {tuple(hidden.shape[:2])} like hidden's first two dims, got "
                         f"{tuple(mask.shape)}.")
    mask = mask.to(device=hidden.device, dtype=torch.bool)
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten()[:5].tolist()
        raise ValueError(f"mask: expected at least one token per row, got {int(empty.sum())} empty rows "
                         f"(first: {rows}). A text that tokenises to nothing has no embedding; drop it.")
    return mask


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the hidden states of the tokens in ``mask``, in float32."""
    mask = _check(hidden, mask)
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.to(torch.float32) * m).sum(dim=1) / m.sum(dim=1)


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the tokens in ``mask``, taken in float32 (masked positions never win)."""
    mask = _check(hidden, mask)
    h = hidden.to(torch.float32)
    neg = torch.tensor(float("-inf"), dtype=torch.float32, device=h.device)
    return torch.where(mask.unsqueeze(-1), h, neg).amax(dim=1)


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True per row (the first real token; works under left and right padding)."""
    m = mask.to(torch.bool)
    if bool((~m.any(dim=1)).any()):
        raise ValueError("mask: expected at least one real token per row, got an empty row.")
    return m.to(torch.int8).argmax(dim=1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True per row (the last real token; works under left and right padding)."""
    m = mask.to(torch.bool)
    if bool((~m.any(dim=1)).any()):
        raise ValueError("mask: expected at least one real token per row, got an empty row.")
    return m.shape[1] - 1 - m.flip(1).to(torch.int8).argmax(dim=1)


def last_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real token, in float32 (for a causal model the only token that has seen the
    whole text; with an appended end-of-sequence token, that token). ``attention_mask`` is the padding mask, so
    left and right padding give the same vector."""
    mask = _check(hidden, attention_mask)
    idx = last_token_index(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx].to(torch.float32)


def weighted_mean_pool(hidden: torch.Tensor, mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean (sentence-transformers' ``weightedmean``, as in SGPT): the token at 1-based position
    ``k`` among the real tokens weighs ``k``; over the tokens in ``mask``, in float32."""
    mask = _check(hidden, mask)
    real = attention_mask.to(device=hidden.device, dtype=torch.bool)
    first = first_token_index(real)
    pos = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=torch.float32)
    w = (pos.unsqueeze(0) - first.unsqueeze(1).to(torch.float32)) * mask.to(torch.float32)
    return torch.einsum("bl,bld->bd", w, hidden.to(torch.float32)) / w.sum(dim=1, keepdim=True)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The raw hidden state of the first real token ([CLS] for BERT-style tokenizers), in float32.

    Not BERT's pooler (no dense + tanh). ``attention_mask`` is the padding mask, so left padding works.
    """
    mask = _check(hidden, attention_mask)
    idx = first_token_index(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx].to(torch.float32)


def attention_pool(hidden: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted average ``sum_t w_t h_t`` with ``weights`` (b, L) renormalised over the tokens in ``mask``.

    The weights come from the encoder itself: the last layer's attention of the first real token to every
    token, averaged over heads (see :mod:`embedgeom.encoding`). Parameter-free: nothing is trained.
    """
    mask = _check(hidden, mask)
    if weights.shape != mask.shape:
        raise ValueError(f"weights: expected shape {tuple(mask.shape)}, got {tuple(weights.shape)}.")
    w = torch.where(mask, weights.to(torch.float32), torch.zeros((), device=hidden.device))
    total = w.sum(dim=1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("weights: expected positive attention mass on the pooled tokens, got a row with none.")
    w = w / total
    return torch.einsum("bl,bld->bd", w, hidden.to(torch.float32))


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Identity": lambda t: t, "Tanh": torch.tanh, "ReLU": torch.relu, "GELU": torch.nn.functional.gelu}


def native_pool(native: Any, hidden: torch.Tensor, attention_mask: torch.Tensor,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """sentence-transformers' Pooling -> Dense -> Normalize as ``native`` (an
    :class:`embedgeom.loading.NativePooling`) declares them, over the real tokens of ``hidden``, in float32, in the
    order sentence-transformers concatenates them. ``prompt_mask`` (b, L) marks a prompt's tokens, left out of
    pooling where the checkpoint declares ``include_prompt: false``."""
    parts = []
    mask = attention_mask if prompt_mask is None else attention_mask & ~prompt_mask.to(attention_mask.device)
    for mode in native.modes:
        if mode == "mean":
            parts.append(mean_pool(hidden, mask))
        elif mode == "cls":
            parts.append(cls_pool(hidden, mask))
        elif mode == "max":
            parts.append(max_pool(hidden, mask))
        elif mode == "lasttoken":
            parts.append(last_pool(hidden, mask))
        elif mode == "weightedmean":
            parts.append(weighted_mean_pool(hidden, mask, attention_mask))
        else:  # mean_sqrt_len
            m = _check(hidden, mask).to(torch.float32).unsqueeze(-1)
            parts.append((hidden.to(torch.float32) * m).sum(1) / m.sum(1).sqrt())
    v = torch.cat(parts, dim=1)
    for layer in native.dense:
        w = layer.weight.to(v.device, torch.float32)
        v = v @ w.T
        if layer.bias is not None:
            v = v + layer.bias.to(v.device, torch.float32)
        v = _ACTIVATIONS[layer.activation](v)
    if native.normalize:
        v = torch.nn.functional.normalize(v, p=2, dim=1)
    return v


def first_token_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    first: torch.Tensor,
    scaling: float,
    position_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Head-averaged softmax attention of the query at position ``first[b]`` to every key, in float32.

    ``query``/``key``: (b, heads, L, d_head) as the attention kernel saw them (after any rotary embedding);
    ``attention_mask``: the kernel's mask, boolean (True = attend) or additive float, broadcastable to
    (b, heads, L, L), or None. Recomputes one query row per text, so the model can keep fused SDPA kernels.
    """
    b = query.shape[0]
    rows = torch.arange(b, device=query.device)
    q = query[rows, :, first].to(torch.float32)  # (b, h, d)
    k = key.to(torch.float32)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: repeat key heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = torch.einsum("bhd,bhld->bhl", q, k) * scaling
    if position_bias is not None:
        pb = position_bias.expand(b, -1, -1, -1) if position_bias.shape[0] == 1 else position_bias
        scores = scores + pb[rows, :, first].to(torch.float32)
    if attention_mask is not None:
        m = attention_mask.expand(b, -1, -1, -1) if attention_mask.shape[0] == 1 else attention_mask
        m_row = m[rows, :, first]  # (b, 1 or h, L)
        if m_row.dtype == torch.bool:
            scores = scores.masked_fill(~m_row, float("-inf"))
        else:
            scores = scores + m_row.to(torch.float32)
    return scores.softmax(dim=-1).mean(dim=1)


# --- the registry ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolInput:
    """What a pooler sees for one batch at one layer.

    ``hidden``: (b, L, d) hidden states of the layer as the model returned them (any float dtype; never write into
    them); ``attention_mask``: (b, L) bool, the real (non-padding) tokens; ``pool_mask``: (b, L) bool, the tokens
    that take part in pooling (the real tokens, less special tokens under ``special_tokens="exclude"``);
    ``attention_row``: (b, L) float32, the first real token's attention to every token at this layer averaged over
    heads (only for poolers that need ``"attention_row"``); ``native``: the checkpoint's declared
    sentence-transformers modules (only for poolers that need ``"native"``); ``prompt_mask``: (b, L) bool, the
    tokens of the prompt prepended to every text (None when there is none)."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor
    pool_mask: torch.Tensor
    attention_row: torch.Tensor | None = None
    native: Any = None
    #: (b, L) bool, the tokens of a prompt prepended to every text (None without a prompt).
    prompt_mask: torch.Tensor | None = None


#: A pooler's function: one batch at one layer -> (b, d') vectors (returned as float32).
PoolFn = Callable[[PoolInput], torch.Tensor]


@dataclass(frozen=True)
class Pooler:
    """One registered pooling (see the module docstring). ``layers``: ``"any"`` (every hidden-state index,
    0 = embedding output), ``"transformer"`` (layers >= 1: the pooler needs a layer's attention, or means nothing
    on the embedding output) or ``"last"`` (the last layer only). ``version``: bump it whenever the function's
    vectors change, so no cached vector of an older version is served."""

    name: str
    fn: PoolFn
    kinds: tuple[str, ...]
    needs: frozenset[str]
    definition: str
    version: int = 1
    layers: str = "any"

    def applies_to(self, kind: str) -> bool:
        return kind in self.kinds

    @property
    def declared(self) -> bool:
        """Whether it needs something the checkpoint must declare (``native``): never part of ``"all"``."""
        return "native" in self.needs

    def at_layer(self, layer: int, num_layers: int) -> bool:
        """Whether it is defined at hidden-state index ``layer`` of a model with ``num_layers`` layers."""
        if self.layers == "transformer":
            return layer >= 1
        if self.layers == "last":
            return layer == num_layers
        return True

    def cache_fields(self) -> dict[str, Any]:
        """Its part of the embedding-cache key beyond its name: its version where it is not 1 (so the keys of
        version-1 poolers are those from before the registry)."""
        return {} if self.version == 1 else {"pooler_version": self.version}

    def __call__(self, x: PoolInput) -> torch.Tensor:
        return self.fn(x)


_REGISTRY: dict[str, Pooler] = {}
_BUILTIN: frozenset[str] = frozenset(("mean", "cls", "max", "attention", "native", "last"))


def _check_spec(name: Any, fn: Any, kinds: Iterable[str], needs: Iterable[str], definition: Any, version: Any,
                layers: Any) -> tuple[tuple[str, ...], frozenset[str]]:
    if not isinstance(name, str) or not name or name != name.strip() or any(c in name for c in ",@/ ") \
            or name == "all":
        raise ValueError(f"name: expected a non-empty pooler name without spaces, ',', '@' or '/' (and not 'all'), "
                         f"got {name!r}.")
    if not callable(fn):
        raise ValueError(f"fn: expected a function PoolInput -> (batch, dim) tensor, got {type(fn).__name__}.")
    kinds_t = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds_t or any(k not in MODEL_KINDS for k in kinds_t):
        raise ValueError(f"kinds: expected model kinds from {MODEL_KINDS}, got {kinds_t!r}.")
    needs_s = frozenset((needs,) if isinstance(needs, str) else needs) | {"hidden"}
    if not needs_s <= set(NEEDS):
        raise ValueError(f"needs: expected names from {NEEDS}, got {sorted(needs_s - set(NEEDS))}.")
    if not isinstance(definition, str) or not definition.strip() or "\n" in definition:
        raise ValueError(f"definition: expected one line saying what the pooler computes, got {definition!r}.")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected an integer >= 1, got {version!r}.")
    if layers not in LAYER_RULES:
        raise ValueError(f"layers: expected one of {LAYER_RULES}, got {layers!r}.")
    return kinds_t, needs_s


def register_pooler(name: str, fn: PoolFn | None = None, *, definition: str, kinds: Sequence[str] = ("encoder",),
                    needs: Iterable[str] = ("hidden",), version: int = 1, layers: str = "any",
                    replace: bool = False) -> Any:
    """Register pooler ``name``: ``fn(x: PoolInput) -> (b, d')`` tensor, for models of ``kinds``, needing ``needs``
    (from :data:`NEEDS`; ``"hidden"`` is implied), defined at ``layers`` (:data:`LAYER_RULES`), described by the
    one-line ``definition``; ``version`` enters the embedding-cache key (bump it whenever the vectors change).

    Returns the :class:`Pooler`; without ``fn`` it returns a decorator (``@register_pooler("x", definition=...)``).
    A registered name is refused unless ``replace=True``; the built-ins are never replaced.
    """
    if fn is None:
        def decorate(f: PoolFn) -> PoolFn:
            register_pooler(name, f, definition=definition, kinds=kinds, needs=needs, version=version,
                            layers=layers, replace=replace)
            return f

        return decorate
    kinds_t, needs_s = _check_spec(name, fn, kinds, needs, definition, version, layers)
    if name in _REGISTRY and (name in _BUILTIN or not replace):
        why = "a built-in pooler" if name in _BUILTIN else "registered already; pass replace=True to redefine it"
        raise ValueError(f"name: expected a new pooler name, got {name!r} ({why}).")
    pooler = Pooler(name, fn, kinds_t, needs_s, definition.strip(), version, layers)
    _REGISTRY[name] = pooler
    return pooler


def unregister_pooler(name: str) -> None:
    """Remove a pooler registered with :func:`register_pooler` (the built-ins stay)."""
    if name in _BUILTIN:
        raise ValueError(f"name: expected a pooler registered by the caller, got the built-in {name!r}.")
    if name not in _REGISTRY:
        raise ValueError(f"name: expected a registered pooler, got {name!r} (registered: {', '.join(_REGISTRY)}).")
    del _REGISTRY[name]


@contextlib.contextmanager
def registered_pooler(name: str, fn: PoolFn, **spec: Any) -> Iterator[Pooler]:
    """:func:`register_pooler` for the block only (tests, experiments): on exit the registry holds under ``name``
    what it held before the block (nothing, or the pooler ``replace=True`` replaced)."""
    before = _REGISTRY.get(name)
    pooler = register_pooler(name, fn, **spec)
    try:
        yield pooler
    finally:
        if before is None:
            _REGISTRY.pop(name, None)
        else:
            _REGISTRY[name] = before


def pooler_names(kind: str | None = None, *, include_native: bool = True) -> tuple[str, ...]:
    """Registered pooler names in registration order: those that apply to models of ``kind`` (None: any kind);
    without the ones that need a checkpoint's declaration (``native``) when ``include_native`` is False.
    ``pooler_names(kind, include_native=False)`` is what ``"all"`` means for a model of that kind."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"kind: expected one of {MODEL_KINDS} or None, got {kind!r}.")
    return tuple(p.name for p in _REGISTRY.values()
                 if (kind is None or p.applies_to(kind)) and (include_native or not p.declared))


def get_pooler(name: str) -> Pooler:
    """The registered pooler ``name``; an unknown name is one ValueError listing the registered ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"poolings: expected names from {', '.join(_REGISTRY)} or 'all', got {name!r}.") from None


def resolve_poolings(poolings: str | Sequence[str], *, kind: str = "encoder", declared: bool = True,
                     extra: Iterable[str] = ()) -> tuple[str, ...]:
    """``poolings`` ("all", a comma-separated string or names) as distinct names, checked against the registry
    for a model of ``kind``: ``"all"`` expands as the module docstring says; an unknown name, or one that does not
    apply to ``kind``, is one ValueError naming the poolers that apply (those needing a checkpoint's declaration
    only where ``declared``). ``extra`` names (a caller's own poolers, outside the registry) are accepted as they
    are. Whether a declared pooler's declaration is there is the caller's check."""
    extra = tuple(extra)
    if isinstance(poolings, str):
        poolings = tuple(p.strip() for p in poolings.split(","))
    names: list[str] = []
    for p in poolings:
        names += pooler_names(kind, include_native=False) if p == "all" else [p]
    out = tuple(dict.fromkeys(names))
    apply = ", ".join((*pooler_names(kind, include_native=declared), *extra))
    if not out:
        raise ValueError(f"poolings: expected at least one of {apply} or 'all', got none.")
    for p in out:
        if p in extra:
            continue
        if p not in _REGISTRY:
            raise ValueError(f"poolings: expected names from {apply} or 'all', got {p!r}.")
        pooler = _REGISTRY[p]
        if not pooler.applies_to(kind):
            raise ValueError(f"poolings: {p!r} applies to {' and '.join(pooler.kinds)} models, not to this {kind} "
                             f"model; poolings that apply: {apply}.")
    return out


def caller_pooler(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Pooler:
    """A caller's own pooling, outside the registry (:func:`embedgeom.encode`'s ``custom_poolers``):
    ``fn(hidden float32 (b, L, d), attention_mask bool (b, L))``; any model kind, any layer."""
    return Pooler(name, lambda x: fn(x.hidden.to(torch.float32), x.attention_mask), MODEL_KINDS,
                  frozenset({"hidden"}), "a caller-supplied pooler (custom_poolers)")


def __getattr__(name: str) -> tuple[str, ...]:
    # POOLINGS / ALL_POOLINGS: views of the registry, computed when read (so registered poolers appear in them)
    if name == "POOLINGS":  # what "all" means for an encoder
        return pooler_names("encoder", include_native=False)
    if name == "ALL_POOLINGS":  # every pooler an encoder can have, with native where a checkpoint declares it
        return pooler_names("encoder")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the built-ins: the poolings embedgeom defines (see the module docstring and embedgeom.encoding) ----------

_BOTH = ("encoder", "decoder")
register_pooler("mean", lambda x: mean_pool(x.hidden, x.pool_mask), kinds=_BOTH,
                definition="average of the hidden states of real tokens (special tokens included unless "
                           "special_tokens=exclude; for a causal model, of its causal states)")
register_pooler("cls", lambda x: cls_pool(x.hidden, x.attention_mask), layers="transformer",
                definition="raw hidden state of the first real token (not BERT's pooler)")
register_pooler("max", lambda x: max_pool(x.hidden, x.pool_mask), kinds=_BOTH,
                definition="element-wise max over real tokens, in float32")
register_pooler("attention", lambda x: attention_pool(x.hidden, x.attention_row, x.pool_mask),
                needs=("hidden", "attention_row"), layers="transformer",
                definition="the encoder's own first-token attention at that layer, head-averaged, renormalised over "
                           "real tokens (parameter-free)")
register_pooler("native", lambda x: native_pool(x.native, x.hidden, x.attention_mask, x.prompt_mask),
                needs=("hidden", "native"), layers="last", kinds=_BOTH, version=2,
                definition="the sentence-transformers checkpoint's declared Pooling/Dense/Normalize")
register_pooler("last", lambda x: last_pool(x.hidden, x.attention_mask), kinds=("decoder",), layers="transformer",
                definition="hidden state of the last real token (with the end-of-sequence token where one is "
                           "appended), under left or right padding")
