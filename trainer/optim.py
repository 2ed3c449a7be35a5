"""AdamW parameter groups and the learning-rate schedule (a pure function of the step: nothing to save).

Groups: weight decay on every matrix (dim >= 2: linear weights and embeddings); none on vectors (biases,
LayerNorm weights, the predictor's target embedding) and the balance scalars. The balance scalars use
``lr * balance_lr_scale``. AdamW is ``fused`` on CUDA and ``foreach`` elsewhere.

Schedule for optimizer step ``s`` (0-based): linear warm-up ``(s + 1) / warmup`` for ``s < warmup``, then with
``p = (s - warmup) / (total - warmup)``: ``cosine`` ``m + (1 - m) (1 + cos(pi p)) / 2``, ``linear``
``m + (1 - m)(1 - p)``, ``constant`` 1, where ``m = min_lr_ratio``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .errors import fail

LR_SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str = "cosine",
              min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (see the module docstring)."""
    if schedule not in LR_SCHEDULES:
        raise fail("optim.schedule", f"one of {'|'.join(LR_SCHEDULES)}", repr(schedule), "Pick a listed schedule.")
    if total_steps < 1 or step < 0 or warmup_steps < 0:
        raise fail("lr_factor", "step >= 0, total_steps >= 1, warmup_steps >= 0",
                   f"{step}, {total_steps}, {warmup_steps}", "Check the loop bounds.")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    return min_ratio + (1.0 - min_ratio) * (1.0 - p)


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], *, lr: float, betas: tuple[float, float],
                    eps: float, weight_decay: float, balance_lr_scale: float = 1.0, fused: bool = False
                    ) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, grouped as in the module docstring. Each group records its
    ``lr_scale`` and parameter ``names`` (for the checkpoint)."""
    groups: dict[str, dict] = {
        "decay": {"params": [], "names": [], "weight_decay": weight_decay, "lr_scale": 1.0},
        "no_decay": {"params": [], "names": [], "weight_decay": 0.0, "lr_scale": 1.0},
        "balance": {"params": [], "names": [], "weight_decay": 0.0, "lr_scale": balance_lr_scale},
    }
    for name, p in named_params:
        if not p.requires_grad:
            continue
        key = "balance" if name.startswith("balance.") else ("decay" if p.ndim >= 2 else "no_decay")
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    param_groups = [dict(g, lr=lr * g["lr_scale"], group=k) for k, g in groups.items() if g["params"]]
    if not param_groups:
        raise fail("build_optimizer", "at least one trainable parameter", "none", "Check requires_grad.")
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Set every group's lr to ``base_lr * factor * group['lr_scale']``; returns ``base_lr * factor``."""
    lr = base_lr * factor
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr
