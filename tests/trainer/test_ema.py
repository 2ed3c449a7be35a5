"""EMA momentum schedules and the fused update, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.ema import ema_momentum, ema_update
from trainer.errors import TrainerError


def test_linear_schedule_endpoints_and_midpoint():
    kw = {"start": 0.996, "end": 1.0, "schedule": "linear"}
    assert ema_momentum(0, 101, **kw) == pytest.approx(0.996)
    assert ema_momentum(50, 101, **kw) == pytest.approx(0.998)
    assert ema_momentum(100, 101, **kw) == pytest.approx(1.0)


def test_cosine_and_constant_schedules():
    kw = {"start": 0.99, "end": 1.0}
    # p = 1/4: (1 - cos(pi/4)) / 2
    expected = 0.99 + 0.01 * (1 - math.cos(math.pi / 4)) / 2
    assert ema_momentum(25, 101, schedule="cosine", **kw) == pytest.approx(expected)
    assert ema_momentum(50, 101, schedule="cosine", **kw) == pytest.approx(0.995)
    assert ema_momentum(77, 101, schedule="constant", **kw) == 0.99


def test_ema_update_hand_computed_and_noop_at_one():
    t = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    s = [torch.tensor([3.0, -2.0]), torch.tensor([[10.0]])]
    ema_update(t, s, 0.75)
    assert t[0].tolist() == pytest.approx([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2])
    assert t[1].item() == pytest.approx(2.5)
    before = [x.clone() for x in t]
    ema_update(t, s, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, t, strict=True))
    ema_update(t, s, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(t, s, strict=True))


def test_ema_update_does_not_touch_autograd():
    p = torch.nn.Parameter(torch.ones(3))
    t = [torch.zeros(3)]
    ema_update(t, [p], 0.5)
    assert not t[0].requires_grad and t[0].tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(("args", "match"), [((5, 5), "step"), ((0, 10), "ema.start")])
def test_bad_arguments(args, match):
    kw = {"start": 0.996, "end": 1.0} if match == "step" else {"start": 1.0, "end": 0.9}
    with pytest.raises(TrainerError, match=match):
        ema_momentum(*args, **kw)
