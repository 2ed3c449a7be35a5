"""MLM corruption with a static budget of masked positions (no host sync, compile-friendly shapes).

Selection (per row, among *eligible* positions: real tokens that are not special tokens):

* ``span_length == 1``: exactly ``n = floor(rate * n_eligible + u)`` positions, ``u ~ U(0, 1)`` per row
  (stochastic rounding, so the expected share is exactly ``rate``), chosen uniformly without replacement.
* ``span_length = k > 1``: ``floor(rate * n_eligible / k + u)`` span starts chosen the same way, each extended
  over the next ``k - 1`` positions while they stay eligible (a span never crosses [SEP]/[CLS]/padding).
  Overlaps and clipped spans make the realised share slightly below ``rate``.

Corruption of the selected positions: with probability ``mask_prob`` -> ``[MASK]``, ``random_prob`` -> a token
drawn uniformly from the non-special vocabulary, otherwise unchanged (BERT's 80/10/10 by default).

The indices of the selected tokens are gathered, in order, into a fixed ``budget = min(L, ceil(rate * L) +
span_length)`` slots per row (``valid`` marks the used slots), which is an upper bound of the selection size, so
the MLM head and the JEPA loss run on ``B x budget`` positions instead of ``B x L``.

All randomness comes from the ``generator`` argument (seeded per step by the training loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import fail

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MaskedBatch:
    """The corrupted input and the gathered targets of one batch of ``B`` rows of ``L`` tokens.

    ``slots`` are *sequence indices* (which tokens were selected), not the encoder's position ids (those come
    from the packed layout, :class:`trainer.model.PackedBatch`)."""

    #: (B, L) long: the corrupted ids the student sees.
    input_ids: torch.Tensor
    #: (B, L) bool: the selected tokens (their original id is predicted).
    selected: torch.Tensor
    #: (B, K) long, K = :func:`mask_budget`: the selected tokens' indices in order, then filler (index 0).
    slots: torch.Tensor
    #: (B, K) bool: which slots hold a selected token.
    valid: torch.Tensor
    #: (B, K) long: the original ids at the slots, ``IGNORE_INDEX`` where not valid.
    labels: torch.Tensor


def mask_budget(seq_len: int, rate: float, span_length: int) -> int:
    """Slots per row: ``min(seq_len, ceil(rate * seq_len) + span_length)``."""
    return min(seq_len, math.ceil(rate * seq_len) + span_length)


def _choose(eligible: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Exactly ``counts[b]`` eligible positions per row, uniformly without replacement (counts <= eligible)."""
    scores = torch.rand(eligible.shape, generator=generator, device=eligible.device)
    scores = scores.masked_fill(~eligible, 2.0)
    order = scores.argsort(dim=1)
    take = torch.arange(eligible.shape[1], device=eligible.device)[None, :] < counts[:, None]
    return torch.zeros_like(eligible).scatter(1, order, take)


def mask_tokens(input_ids: torch.Tensor, eligible: torch.Tensor, *, rate: float, mask_prob: float,
                random_prob: float, span_length: int, mask_id: int, replacement_ids: torch.Tensor,
                generator: torch.Generator | None = None) -> MaskedBatch:
    """Corrupt ``input_ids`` (B, L) at a random selection of ``eligible`` (B, L) positions (module docstring)."""
    if input_ids.ndim != 2 or eligible.shape != input_ids.shape or eligible.dtype != torch.bool:
        raise fail("mask_tokens", "input_ids (B, L) and a bool eligible mask of the same shape",
                   f"{tuple(input_ids.shape)} and {eligible.dtype} {tuple(eligible.shape)}", "Check the batch.")
    if not 0.0 < rate < 1.0 or span_length < 1 or mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
        raise fail("mask_tokens", "0 < rate < 1, span_length >= 1, mask_prob + random_prob <= 1",
                   f"rate={rate}, span_length={span_length}, mask_prob={mask_prob}, random_prob={random_prob}",
                   "Fix the mask.* settings.")
    if replacement_ids.ndim != 1 or replacement_ids.numel() == 0:
        raise fail("replacement_ids", "a non-empty 1-D tensor of token ids", str(tuple(replacement_ids.shape)),
                   "Pass the non-special vocabulary ids.")
    bsz, seq_len = input_ids.shape
    device = input_ids.device
    n_eligible = eligible.sum(dim=1)
    u = torch.rand(bsz, generator=generator, device=device)
    if span_length == 1:
        counts = torch.minimum(torch.floor(rate * n_eligible + u).long(), n_eligible)
        selected = _choose(eligible, counts, generator)
    else:
        starts = torch.minimum(torch.floor(rate * n_eligible / span_length + u).long(), n_eligible)
        current = _choose(eligible, starts, generator)
        selected = current
        for _ in range(span_length - 1):
            current = torch.nn.functional.pad(current[:, :-1], (1, 0), value=False) & eligible
            selected = selected | current
    budget = mask_budget(seq_len, rate, span_length)
    key = (~selected).to(torch.int8)
    slots = torch.sort(key, dim=1, stable=True).indices[:, :budget]
    valid = torch.arange(budget, device=device)[None, :] < selected.sum(dim=1, keepdim=True)
    # Selections beyond the budget (impossible by construction) would be corrupted but unscored: drop them.
    selected = torch.zeros_like(selected).scatter(1, slots, valid)

    r = torch.rand((bsz, seq_len), generator=generator, device=device)
    to_mask = selected & (r < mask_prob)
    to_random = selected & (r >= mask_prob) & (r < mask_prob + random_prob)
    pick = torch.randint(0, replacement_ids.numel(), (bsz, seq_len), generator=generator, device=device)
    random_ids = replacement_ids.to(device)[pick]
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_id), torch.where(to_random, random_ids,
                                                                                       input_ids))
    labels = torch.gather(input_ids, 1, slots).masked_fill(~valid, IGNORE_INDEX)
    return MaskedBatch(input_ids=corrupted, selected=selected, slots=slots, valid=valid, labels=labels)


def replacement_vocabulary(vocab_size: int, special_ids: tuple[int, ...], device: torch.device | str = "cpu"
                           ) -> torch.Tensor:
    """Ids a selected token may be replaced with under the "random token" rule: the vocabulary minus specials."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[[i for i in special_ids if 0 <= i < vocab_size]] = False
    return torch.nonzero(keep).flatten().to(device)
