"""Analysis protocols: our default, and the reference study's choices reproduced by name.

Every way the ``paper`` protocol deviates from the default is listed in :data:`PAPER_DEVIATIONS` (and shown
by ``embedgeom analyze --help`` and the README), so its table can be regenerated on any checkpoint without
mistaking its choices for ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

ProtocolName = Literal["default", "paper"]
PROTOCOLS: tuple[str, ...] = ("default", "paper")

#: The reference study ("Predict and Reconstruct", arXiv 2606.05173) vs our default, one line per choice.
PAPER_DEVIATIONS: dict[str, str] = {
    "subset": "at most 1,000 items per task (ours: all, or --max-texts); it drew them unseeded, we seed them",
    "pair_text": "pair tasks encode the two sentences joined by the tokenizer's pair template ([CLS] a [SEP] b [SEP]) "
                 "as one item (ours: each unique sentence separately, pairs kept for alignment and probes)",
    "alignment": "class-conditional: mean over all pairs of items with the same label of ||z_i - z_j||^4 "
                 "(regression scores rounded to integer classes) - a within-class spread, not alignment of "
                 "positive pairs (ours: Wang & Isola alignment, alpha=2, over the task's positive pairs)",
    "attention": "attention pooling by an untrained, randomly initialised (here seeded) linear scoring head "
                 "softmax(h.w + b) over real tokens (ours: the encoder's own last-layer first-token attention)",
    "poolings": "mean, max and attention; no CLS (its 'weighted' pooling equals mean and is not repeated)",
    "spectral_entropy": "reported normalised by log(d) (ours: nats, unnormalised)",
}


@dataclass(frozen=True)
class Protocol:
    """The analysis choices that change numbers."""

    name: str
    max_texts: int | None
    poolings: tuple[str, ...] | None  # None = whatever the caller asked for
    pair_text: Literal["separate", "joined"]
    alignment: Literal["positives", "class-conditional"]
    attention: Literal["first-token", "random-head"]
    spectral_entropy_normalized: bool
    deviations: dict[str, str] = field(default_factory=dict)


DEFAULT = Protocol("default", None, None, "separate", "positives", "first-token", False)
PAPER = Protocol("paper", 1000, ("mean", "max", "paper_attention"), "joined", "class-conditional", "random-head",
                 True, PAPER_DEVIATIONS)


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {name!r}.")
    return PAPER if name == "paper" else DEFAULT


class RandomAttentionHead:
    """The reference study's attention pooling: an *untrained* linear scorer ``s_t = h_t . w + b`` with
    PyTorch's default ``nn.Linear(d, 1)`` initialisation under ``torch.manual_seed(seed)``, softmax over the
    real tokens, weighted sum of hidden states. Seeded here so the numbers can be regenerated."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        layer = torch.nn.Linear(dim, 1)
        torch.random.set_rng_state(gen_state)
        self.weight = layer.weight.detach()[0].to(torch.float32)
        self.bias = float(layer.bias.detach()[0])
        self.fingerprint = f"paper-random-attention-head(d={dim},seed={seed})"

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = hidden.to(torch.float32) @ self.weight.to(hidden.device) + self.bias
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
        w = scores.softmax(dim=1)
        return torch.einsum("bl,bld->bd", w, hidden.to(torch.float32))


def class_conditional_alignment(x: np.ndarray, labels: np.ndarray) -> float:
    """The reference study's 'alignment': mean over all pairs i < j with ``labels[i] == labels[j]`` of
    ``||z_i - z_j||^4`` on L2-normalised rows (``(2 - 2 cos)^2``). Exact, O(n_c^2 d) per class."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if len(x) != len(labels):
        raise ValueError(f"labels: expected {len(x)} labels, got {len(labels)}.")
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    total, count = 0.0, 0
    for c in np.unique(labels):
        zc = z[labels == c]
        m = len(zc)
        if m < 2:
            continue
        d2 = np.clip(2.0 - 2.0 * (zc @ zc.T), 0.0, None)
        iu = np.triu_indices(m, k=1)
        total += float((d2[iu] ** 2).sum())
        count += len(iu[0])
    if count == 0:
        raise ValueError("labels: expected at least one class with two items, got none.")
    return total / count


def paper_classes(labels: np.ndarray, regression: bool) -> np.ndarray:
    """Classes for the class-conditional alignment: the labels, or regression scores rounded to integers."""
    return np.rint(labels).astype(np.int64) if regression else np.asarray(labels, dtype=np.int64)
