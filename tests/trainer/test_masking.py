"""Masking statistics against their closed forms (binomial shares), special tokens, spans, budget, labels."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.errors import TrainerError
from trainer.masking import IGNORE_INDEX, mask_budget, mask_tokens, replacement_vocabulary

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 1000


def _batch(b: int = 256, L: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[CLS] tokens [SEP] [PAD]...`` of random lengths; eligible = the content tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (b, L), generator=g)
    lengths = torch.randint(10, L - 1, (b,), generator=g)
    pos = torch.arange(L)[None, :]
    ids[:, 0] = CLS
    ids = torch.where(pos == lengths[:, None] + 1, torch.full_like(ids, SEP), ids)
    ids = torch.where(pos > lengths[:, None] + 1, torch.full_like(ids, PAD), ids)
    eligible = (pos >= 1) & (pos <= lengths[:, None])
    return ids, eligible


def _mask(ids, eligible, seed=1, **kw):
    args = {"rate": 0.15, "mask_prob": 0.8, "random_prob": 0.1, "span_length": 1, "mask_id": MASK,
            "replacement_ids": replacement_vocabulary(VOCAB, SPECIALS)}
    args.update(kw)
    return mask_tokens(ids, eligible, generator=torch.Generator().manual_seed(seed), **args)


def test_selection_share_matches_rate_and_stays_on_eligible_tokens():
    ids, eligible = _batch()
    m = _mask(ids, eligible)
    n_eligible = int(eligible.sum())
    n_sel = int(m.selected.sum())
    # stochastic rounding: per row floor(r*n + u) has mean r*n and variance <= 1/4, so the total is within
    # a few sqrt(B)/2 of rate * n_eligible
    assert abs(n_sel - 0.15 * n_eligible) <= 4 * math.sqrt(ids.shape[0]) / 2
    assert not (m.selected & ~eligible).any()
    # per row the count is floor or ceil of rate * n_eligible_row
    per_row = m.selected.sum(1).float()
    target = 0.15 * eligible.sum(1).float()
    assert ((per_row == target.floor()) | (per_row == target.ceil())).all()


def test_80_10_10_shares_are_binomial():
    ids, eligible = _batch(b=512, seed=3)
    m = _mask(ids, eligible, seed=4)
    sel = m.selected
    n = int(sel.sum())
    to_mask = int((m.input_ids[sel] == MASK).sum())
    changed = int(((m.input_ids != ids) & (m.input_ids != MASK) & sel).sum())
    kept = int(((m.input_ids == ids) & sel).sum())
    for observed, p in ((to_mask, 0.8), (changed, 0.1 * (1 - 1 / (VOCAB - 5))), (kept, 0.1 + 0.1 / (VOCAB - 5))):
        sd = math.sqrt(n * p * (1 - p))
        assert abs(observed - n * p) < 5 * sd, (observed, n * p, sd)
    # nothing outside the selection changes; random replacements never produce a special token
    assert torch.equal(m.input_ids[~sel], ids[~sel])
    replaced = m.input_ids[sel & (m.input_ids != MASK)]
    assert not torch.isin(replaced, torch.tensor(SPECIALS)).any()


def test_labels_and_slots_list_the_selected_positions_in_order():
    ids, eligible = _batch(b=16, L=40, seed=5)
    m = _mask(ids, eligible, seed=6)
    budget = mask_budget(40, 0.15, 1)
    assert m.slots.shape == (16, budget) and m.labels.shape == (16, budget)
    for r in range(16):
        expected = torch.nonzero(m.selected[r]).flatten()
        k = expected.numel()
        assert torch.equal(m.slots[r, :k], expected)
        assert m.valid[r, :k].all() and not m.valid[r, k:].any()
        assert torch.equal(m.labels[r, :k], ids[r, expected])
        assert (m.labels[r, k:] == IGNORE_INDEX).all()


def test_mask_budget_closed_form():
    assert mask_budget(128, 0.15, 1) == 21  # ceil(19.2) + 1
    assert mask_budget(128, 0.15, 5) == 25
    assert mask_budget(10, 0.9, 5) == 10  # capped at L


def test_span_masking_makes_contiguous_runs_within_documents():
    ids, eligible = _batch(b=128, L=96, seed=7)
    m = _mask(ids, eligible, seed=8, span_length=4)
    assert not (m.selected & ~eligible).any()
    runs = []
    for r in range(ids.shape[0]):
        row = [*m.selected[r].tolist(), False]
        length = 0
        for v in row:
            if v:
                length += 1
            elif length:
                runs.append(length)
                length = 0
    # runs are whole spans (4), merged spans (>4) or spans clipped at [SEP] (<4): most are exactly >= 4
    assert sum(r >= 4 for r in runs) / len(runs) > 0.85
    share = m.selected.sum().item() / eligible.sum().item()
    assert 0.12 < share <= 0.16  # overlaps and clipping only lower the share below 0.15


def test_same_generator_seed_same_mask_and_different_seed_different_mask():
    ids, eligible = _batch(b=8, L=64)
    a, b, c = _mask(ids, eligible, seed=11), _mask(ids, eligible, seed=11), _mask(ids, eligible, seed=12)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.selected, b.selected)
    assert not torch.equal(a.selected, c.selected)


def test_replacement_vocabulary_excludes_specials():
    rv = replacement_vocabulary(10, (0, 3, 9))
    assert rv.tolist() == [1, 2, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("kw", [{"rate": 0.0}, {"rate": 1.0}, {"span_length": 0}, {"mask_prob": 0.95,
                                                                                     "random_prob": 0.1}])
def test_bad_settings_raise_trainer_error(kw):
    ids, eligible = _batch(b=2, L=16)
    with pytest.raises(TrainerError, match="mask_tokens"):
        _mask(ids, eligible, **kw)
