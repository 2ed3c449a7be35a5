"""Learnable balance between the MLM and the JEPA loss.

``sigmoid`` (the reference study): ``L = w L_mlm + (1 - w) L_jepa``, ``w = sigmoid(theta)``. Its gradient
``dL/dtheta = w (1 - w) (L_mlm - L_jepa)`` pushes ``w`` down whenever the MLM loss is the larger one, which with a
cross-entropy (~2..10 nats) against a cosine loss (<= 2) is always: ``w`` drifts toward 0 and the MLM loss is
starved — a property of the parametrisation, not of the data.

``uncertainty`` (Kendall et al. 2018, the form used in multi-task learning): ``L = sum_i exp(-s_i) L_i + s_i``.
``dL/ds_i = 1 - exp(-s_i) L_i`` is zero at ``exp(-s_i) = 1 / L_i``: each weight settles at the inverse of its own
loss, so the model's gradient is ``sum_i grad L_i / L_i = grad sum_i log L_i``. Neither weight can reach 0 while
its loss is finite, and the numerically smaller loss gets the larger weight, never the whole. Default (see
trainer/README.md).

Both modes report ``w_mlm``, ``w_jepa`` (the effective weights), ``balance = w_mlm / (w_mlm + w_jepa)`` and
``mlm_share = w_mlm L_mlm / (w_mlm L_mlm + w_jepa L_jepa)``.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import fail

BALANCES: tuple[str, ...] = ("uncertainty", "sigmoid")


class Balance(nn.Module):
    """``forward(l_mlm, l_jepa) -> (total, w_mlm, w_jepa)``; ``mode`` is ``uncertainty`` or ``sigmoid``;
    ``init`` is the initial theta (sigmoid) or the initial s_1 = s_2 (uncertainty); 0 = equal weights."""

    def __init__(self, mode: str = "uncertainty", init: float = 0.0):
        super().__init__()
        if mode not in BALANCES:
            raise fail("objective.balance", f"one of {'|'.join(BALANCES)}", repr(mode), "Pick one of the listed modes.")
        self.mode = mode
        if mode == "sigmoid":
            self.logit = nn.Parameter(torch.tensor(float(init)))
        else:
            self.log_vars = nn.Parameter(torch.full((2,), float(init)))

    def forward(self, l_mlm: torch.Tensor, l_jepa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mode == "sigmoid":
            w = torch.sigmoid(self.logit.float())
            return w * l_mlm + (1.0 - w) * l_jepa, w.detach(), (1.0 - w).detach()
        s = self.log_vars.float()
        weights = torch.exp(-s)
        total = weights[0] * l_mlm + s[0] + weights[1] * l_jepa + s[1]
        return total, weights[0].detach(), weights[1].detach()

    @torch.no_grad()
    def weights(self) -> tuple[float, float]:
        """The current effective weights ``(w_mlm, w_jepa)`` (one host sync; for evaluation rows)."""
        if self.mode == "sigmoid":
            w = float(torch.sigmoid(self.logit.float()))
            return w, 1.0 - w
        a, b = torch.exp(-self.log_vars.float()).tolist()
        return float(a), float(b)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
