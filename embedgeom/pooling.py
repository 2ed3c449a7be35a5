"""Mask-correct pooling of token hidden states into one vector per text (pure functions, no model code).

Conventions (they change numbers):

* ``mask`` (b, L) bool marks the tokens that take part. For ``mean``/``max``/``attention`` it is the real
  (non-padding) tokens, with special tokens ([CLS], [SEP]) included by default (as sentence-transformers
  does) or excluded on request - the caller builds the mask.
* Pooling runs in float32 whatever the hidden-state dtype (bf16/fp16 autocast outputs are upcast), and never
  writes into the model's output tensors.
* A row with no token in its mask is an error, never a silent zero or -inf vector.
"""

from __future__ import annotations

from typing import Literal

import torch

Pooling = Literal["mean", "cls", "max", "attention", "native"]
#: The parameter-free poolings every encoder supports.
POOLINGS: tuple[str, ...] = ("mean", "cls", "max", "attention")
#: Also valid where a sentence-transformers checkpoint declares its own pooling.
ALL_POOLINGS: tuple[str, ...] = (*POOLINGS, "native")
#: Version of the pooling code, part of every embedding-cache key: bump it whenever a change here (or in how
#: :mod:`embedgeom.encoding` feeds these functions) changes a vector, so no cached vector from older code is served.
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
