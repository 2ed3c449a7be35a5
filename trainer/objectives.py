"""Loss functions on gathered (masked) positions. All reductions are in float32.

* MLM: cross-entropy of the logits at the selected positions against the original ids, averaged over the valid
  slots of the micro-batch (slots labelled ``IGNORE_INDEX`` do not count).
* JEPA, averaged over valid slots (per-slot values averaged over features for the elementwise losses):
  ``cosine``: ``1 - cos(pred, target)`` (the reference study; in [0, 2]);
  ``smooth_l1``: Huber with threshold ``beta`` (data2vec); ``mse``: squared error.
* Targets: parameter-free layer norm (eps 1e-5) of each of the teacher's top-K layers at the slots, averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import fail
from .masking import IGNORE_INDEX

JEPA_LOSSES: tuple[str, ...] = ("cosine", "smooth_l1", "mse")
_LN_EPS = 1e-5


def _count(valid: torch.Tensor) -> torch.Tensor:
    return valid.sum().clamp_min(1).to(torch.float32)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over rows of ``logits`` (N, V) whose ``labels`` (N,) are not IGNORE_INDEX."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise fail("mlm_loss", "logits (N, V) and labels (N,)", f"{tuple(logits.shape)} and {tuple(labels.shape)}",
                   "Flatten the gathered slots first.")
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / _count(labels != IGNORE_INDEX)


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, *, kind: str = "cosine",
              beta: float = 1.0) -> torch.Tensor:
    """Mean JEPA loss over the ``valid`` (N,) rows of ``pred`` and ``target`` (N, D); see the module docstring."""
    if pred.shape != target.shape or pred.ndim != 2 or valid.shape != pred.shape[:1]:
        raise fail("jepa_loss", "pred and target (N, D) and valid (N,)",
                   f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(valid.shape)}", "Gather the same slots.")
    p, t = pred.float(), target.float()
    if kind == "cosine":
        per = 1.0 - F.cosine_similarity(p, t, dim=-1, eps=1e-8)
    elif kind == "smooth_l1":
        per = F.smooth_l1_loss(p, t, reduction="none", beta=beta).mean(dim=-1)
    elif kind == "mse":
        per = (p - t).pow(2).mean(dim=-1)
    else:
        raise fail("objective.loss", f"one of {'|'.join(JEPA_LOSSES)}", repr(kind), "Pick one of the listed losses.")
    return (per * valid).sum() / _count(valid)


def layer_norm_targets(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average of the parameter-free layer norms of ``layers`` (each (..., D)), in float32."""
    if not layers:
        raise fail("layer_norm_targets", "at least one layer", "none", "Pass the teacher's top-K hidden states.")
    out = None
    for h in layers:
        normed = F.layer_norm(h.float(), (h.shape[-1],), eps=_LN_EPS)
        out = normed if out is None else out + normed
    return out / len(layers)


def masked_feature_variance(x: torch.Tensor, valid: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """Collapse watch: variance over the valid rows of ``x`` (N, D), per feature (unbiased), averaged over
    features. With ``normalize`` (default) each row first gets a parameter-free layer norm, so the value is
    scale-free: about 1 for spread-out vectors (``1 - |mean row|^2 / D`` up to the n/(n-1) factor), 0 when every
    token has the same vector."""
    if x.ndim != 2 or valid.shape != x.shape[:1]:
        raise fail("masked_feature_variance", "x (N, D) and valid (N,)", f"{tuple(x.shape)}, {tuple(valid.shape)}",
                   "Pass the gathered slots.")
    if normalize:
        x = F.layer_norm(x.float(), (x.shape[-1],), eps=_LN_EPS)
    w = valid.to(torch.float32)[:, None]
    n = w.sum()
    mean = (x.float() * w).sum(0) / n.clamp_min(1)
    var = ((x.float() - mean).pow(2) * w).sum(0) / (n - 1).clamp_min(1)
    return var.mean()
