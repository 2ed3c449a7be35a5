"""The reference study's protocol pieces against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from embedgeom.protocols import PAPER, RandomAttentionHead, class_conditional_alignment, get_protocol


def test_class_conditional_alignment_brute_force(rng):
    x = rng.standard_normal((30, 5))
    y = rng.integers(0, 3, 30)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    vals = [np.sum((z[i] - z[j]) ** 2) ** 2 for i, j in itertools.combinations(range(30), 2) if y[i] == y[j]]
    assert class_conditional_alignment(x, y) == pytest.approx(np.mean(vals))


def test_random_head_is_seeded_and_mask_correct():
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    a, b = RandomAttentionHead(8, seed=3), RandomAttentionHead(8, seed=3)
    torch.testing.assert_close(a(h, mask), b(h, mask))
    assert a.fingerprint != RandomAttentionHead(8, seed=4).fingerprint
    h2 = h.clone()
    h2[0, 3:] = 1e6  # padding content must not matter
    torch.testing.assert_close(a(h2, mask)[0], a(h, mask)[0])
    state = torch.random.get_rng_state()
    RandomAttentionHead(8, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_protocol_lookup():
    assert get_protocol("paper") is PAPER and PAPER.max_texts == 1000 and "alignment" in PAPER.deviations
    with pytest.raises(ValueError, match="protocol"):
        get_protocol("mine")
