"""EMA teacher: momentum schedule and the fused in-place update.

After optimizer step ``s`` (0-based) of ``total`` the teacher is updated with momentum
``tau(s) = start + (end - start) * f(p)``, ``p = s / (total - 1)``: ``linear`` f(p) = p (I-JEPA), ``cosine``
f(p) = (1 - cos(pi p)) / 2 (BYOL), ``constant`` tau = start. With the default 0.996 -> 1.0 the last update is a
no-op (the teacher is frozen at the end).

Update: ``teacher <- tau * teacher + (1 - tau) * student`` for every parameter, as one ``torch._foreach_lerp_``
over the parameter lists (float32 master weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import fail

EMA_SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")


def ema_momentum(step: int, total_steps: int, *, start: float, end: float, schedule: str = "linear") -> float:
    """Momentum used for the teacher update after optimizer step ``step`` (see the module docstring)."""
    if schedule not in EMA_SCHEDULES:
        raise fail("ema.schedule", f"one of {'|'.join(EMA_SCHEDULES)}", repr(schedule), "Pick a listed schedule.")
    if not 0.0 <= start <= end <= 1.0:
        raise fail("ema.start/ema.end", "0 <= start <= end <= 1", f"{start}, {end}", "Use e.g. 0.996 and 1.0.")
    if total_steps < 1 or not 0 <= step < total_steps:
        raise fail("ema step", f"0 <= step < total_steps ({total_steps})", str(step), "Check the loop bounds.")
    if schedule == "constant" or total_steps == 1:
        return start
    p = step / (total_steps - 1)
    f = p if schedule == "linear" else (1.0 - math.cos(math.pi * p)) / 2.0
    return start + (end - start) * f


@torch.no_grad()
def ema_update(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], momentum: float) -> None:
    """In place: ``t <- momentum * t + (1 - momentum) * s`` for each pair (same shapes, devices, dtypes)."""
    if len(teacher) != len(student):
        raise fail("ema_update", "as many teacher as student tensors", f"{len(teacher)} vs {len(student)}",
                   "Pair the parameter lists by name.")
    if not 0.0 <= momentum <= 1.0:
        raise fail("momentum", "a number in [0, 1]", str(momentum), "Use the EMA schedule.")
    if momentum == 1.0 or not teacher:
        return
    torch._foreach_lerp_(list(teacher), list(student), 1.0 - momentum)
