"""Recover first-token attention weights from SDPA models without switching the stack to eager attention.

transformers (>= 4.48) routes every attention call through ``ALL_ATTENTION_FUNCTIONS``. We register one
extra implementation, ``"embedgeom_sdpa"``, that calls the stock SDPA kernel unchanged and, only while a
:class:`Recorder` is active on this thread, keeps each layer's query/key/mask so that the first real
token's attention row can be recomputed afterwards (one query row per text, in float32).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch

IMPLEMENTATION = "embedgeom_sdpa"
_state = threading.local()
_registered = False


@dataclass
class Call:
    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    position_bias: torch.Tensor | None


@dataclass
class Recorder:
    """Collects the attention calls of one forward pass, in call (= layer) order. Only the calls whose
    1-based position is in ``keep`` hold tensors (the others are None), so unrequested layers cost nothing."""

    keep: frozenset[int] = frozenset()
    calls: list[Call | None] = field(default_factory=list)

    def __enter__(self) -> Recorder:
        _state.recorder = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _state.recorder = None


def _capturing_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rec = getattr(_state, "recorder", None)
    if rec is not None:
        if len(rec.calls) + 1 in rec.keep:
            scaling = kwargs.get("scaling")
            if scaling is None:
                scaling = query.shape[-1] ** -0.5
            rec.calls.append(Call(query, key, attention_mask, float(scaling), kwargs.get("position_bias")))
        else:
            rec.calls.append(None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def enable(model: Any) -> bool:
    """Switch ``model`` from SDPA to the capturing SDPA wrapper. Returns False if that is not possible
    (eager-only models, or a transformers without the attention interface); callers then fall back to
    ``output_attentions=True``."""
    global _registered
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", IMPLEMENTATION):
        return False
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    if not _registered:
        AttentionInterface.register(IMPLEMENTATION, _capturing_sdpa)
        AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
        _registered = True
    try:
        model.set_attn_implementation(IMPLEMENTATION)
    except (ValueError, AttributeError, KeyError):
        return False
    return getattr(model.config, "_attn_implementation", None) == IMPLEMENTATION
