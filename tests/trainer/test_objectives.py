"""Loss functions against values computed by hand (and against torch's own primitives as a second reference)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from trainer.errors import TrainerError
from trainer.masking import IGNORE_INDEX
from trainer.objectives import jepa_loss, layer_norm_targets, masked_feature_variance, mlm_loss


def test_mlm_loss_hand_computed():
    # row 0: logits (0, ln 3) target 1 -> -log(3/4); row 1 ignored; row 2: logits (0, 0) target 0 -> log 2
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0], [0.0, 0.0]])
    labels = torch.tensor([1, IGNORE_INDEX, 0])
    expected = (-math.log(0.75) + math.log(2.0)) / 2
    assert mlm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mlm_loss_all_ignored_is_zero_not_nan():
    assert mlm_loss(torch.randn(3, 4), torch.full((3,), IGNORE_INDEX)).item() == 0.0


def test_cosine_loss_hand_computed():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    valid = torch.tensor([True, True, False])
    # cos = 0 and 1 on the valid rows -> mean(1 - cos) = (1 + 0) / 2
    assert jepa_loss(pred, target, valid, kind="cosine").item() == pytest.approx(0.5, abs=1e-7)
    valid_all = torch.tensor([True, True, True])  # third row: cos = -1 -> 2
    assert jepa_loss(pred, target, valid_all, kind="cosine").item() == pytest.approx(1.0, abs=1e-7)


def test_smooth_l1_and_mse_hand_computed():
    pred = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    target = torch.tensor([[0.5, 3.0], [1.0, 1.0]])
    valid = torch.tensor([True, True])
    # beta = 1: |d| < 1 -> 0.5 d^2, else |d| - 0.5. Row 0: 0.125, 2.5 -> 1.3125; row 1: 0, 1.5 -> 0.75
    assert jepa_loss(pred, target, valid, kind="smooth_l1", beta=1.0).item() == pytest.approx((1.3125 + 0.75) / 2)
    # beta = 4: all |d| < 4 -> 0.5 d^2 / 4. Row 0: (0.25 + 9) / 8 / 2; row 1: 4 / 8 / 2
    assert jepa_loss(pred, target, valid, kind="smooth_l1", beta=4.0).item() == pytest.approx(
        ((9.25 / 8) / 2 + (4 / 8) / 2) / 2)
    # mse: row 0 (0.25 + 9) / 2; row 1 (0 + 4) / 2
    assert jepa_loss(pred, target, valid, kind="mse").item() == pytest.approx((4.625 + 2.0) / 2)


def test_unknown_jepa_loss_lists_choices():
    with pytest.raises(TrainerError, match=re.escape("one of cosine|smooth_l1|mse")):
        jepa_loss(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, dtype=torch.bool), kind="l3")


def test_layer_norm_targets_average_of_parameter_free_layer_norms():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    b = torch.tensor([[0.0, 0.0, 6.0]])

    def ln(x):
        m = x.mean(-1, keepdim=True)
        v = ((x - m) ** 2).mean(-1, keepdim=True)
        return (x - m) / torch.sqrt(v + 1e-5)

    assert torch.allclose(layer_norm_targets([a]), ln(a), atol=1e-6)
    assert torch.allclose(layer_norm_targets([a, b]), (ln(a) + ln(b)) / 2, atol=1e-6)
    # hand values for a: mean 2, var 2/3 -> (-1, 0, 1) / sqrt(2/3)
    s = math.sqrt(2 / 3 + 1e-5)
    assert layer_norm_targets([a])[0].tolist() == pytest.approx([-1 / s, 0.0, 1 / s], rel=1e-6)


def test_masked_feature_variance_detects_collapse():
    valid = torch.tensor([True, True, True, False])
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [9.0, -9.0]])
    assert masked_feature_variance(same, valid).item() == pytest.approx(0.0, abs=1e-6)
    # raw (unnormalised): features (1, 3, 5) and (0, 0, 3) over valid rows -> unbiased var 4 and 3 -> mean 3.5
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 3.0], [100.0, 100.0]])
    assert masked_feature_variance(x, valid, normalize=False).item() == pytest.approx(3.5)
    # normalised: 2-d rows layer-normed are (-1, 1) or (1, -1) (up to eps); rows 0,1: (1,-1); row 2: (1,-1) ->
    # all identical -> 0
    assert masked_feature_variance(x, valid).item() == pytest.approx(0.0, abs=1e-6)
