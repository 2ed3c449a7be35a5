"""Learning-rate schedule values and parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.optim import build_optimizer, lr_factor, set_lr


def test_warmup_then_cosine_hand_values():
    kw = {"total_steps": 110, "warmup_steps": 10, "schedule": "cosine", "min_ratio": 0.1}
    assert lr_factor(0, **kw) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(109, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.99)))


def test_linear_and_constant():
    assert lr_factor(15, total_steps=20, warmup_steps=0, schedule="linear") == pytest.approx(0.25)
    assert lr_factor(15, total_steps=20, warmup_steps=0, schedule="constant") == 1.0


def test_param_groups_decay_only_matrices_and_scale_balance_lr():
    model = torch.nn.ModuleDict({"lin": torch.nn.Linear(3, 2), "ln": torch.nn.LayerNorm(2)})
    named = [*model.named_parameters(), ("balance.logit", torch.nn.Parameter(torch.zeros(())))]
    opt = build_optimizer(named, lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, balance_lr_scale=10.0)
    groups = {g["group"]: g for g in opt.param_groups}
    assert groups["decay"]["names"] == ["lin.weight"] and groups["decay"]["weight_decay"] == 0.01
    assert groups["no_decay"]["names"] == ["lin.bias", "ln.weight", "ln.bias"]
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert groups["balance"]["names"] == ["balance.logit"] and groups["balance"]["lr"] == pytest.approx(1.0)
    set_lr(opt, 0.1, 0.5)
    assert groups["decay"]["lr"] == pytest.approx(0.05) and groups["balance"]["lr"] == pytest.approx(0.5)
