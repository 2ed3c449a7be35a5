"""Balance gradients in both modes against their closed forms; the sigmoid's drift and the uncertainty fixed point."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.balance import Balance
from trainer.errors import TrainerError


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_sigmoid_total_and_gradient_hand_computed():
    bal = Balance("sigmoid", init=0.3)
    l_mlm = torch.tensor(5.0, requires_grad=True)
    l_jepa = torch.tensor(0.4, requires_grad=True)
    total, w_mlm, w_jepa = bal(l_mlm, l_jepa)
    w = _sigmoid(0.3)
    assert total.item() == pytest.approx(w * 5.0 + (1 - w) * 0.4, rel=1e-6)
    assert (w_mlm.item(), w_jepa.item()) == pytest.approx((w, 1 - w), rel=1e-6)
    total.backward()
    # dL/dtheta = w (1 - w) (L_mlm - L_jepa); dL/dL_mlm = w; dL/dL_jepa = 1 - w
    assert bal.logit.grad.item() == pytest.approx(w * (1 - w) * (5.0 - 0.4), rel=1e-6)
    assert l_mlm.grad.item() == pytest.approx(w, rel=1e-6)
    assert l_jepa.grad.item() == pytest.approx(1 - w, rel=1e-6)


def test_sigmoid_drifts_toward_the_smaller_loss():
    """The reference study's defect: gradient descent on theta starves the (larger) MLM loss."""
    bal = Balance("sigmoid")
    opt = torch.optim.SGD(bal.parameters(), lr=1.0)
    for _ in range(50):
        opt.zero_grad()
        bal(torch.tensor(6.0), torch.tensor(0.5))[0].backward()
        opt.step()
    assert torch.sigmoid(bal.logit).item() < 0.01


def test_uncertainty_total_and_gradient_hand_computed():
    bal = Balance("uncertainty", init=0.0)
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor([0.5, -1.0]))
    l_mlm = torch.tensor(4.0, requires_grad=True)
    l_jepa = torch.tensor(0.2, requires_grad=True)
    total, w_mlm, w_jepa = bal(l_mlm, l_jepa)
    expected = math.exp(-0.5) * 4.0 + 0.5 + math.exp(1.0) * 0.2 - 1.0
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert (w_mlm.item(), w_jepa.item()) == pytest.approx((math.exp(-0.5), math.exp(1.0)), rel=1e-6)
    total.backward()
    # dL/ds_i = 1 - exp(-s_i) L_i
    assert bal.log_vars.grad.tolist() == pytest.approx([1 - math.exp(-0.5) * 4.0, 1 - math.exp(1.0) * 0.2], rel=1e-6)
    assert l_mlm.grad.item() == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_uncertainty_weights_settle_at_inverse_losses_and_never_starve():
    bal = Balance("uncertainty")
    opt = torch.optim.SGD(bal.parameters(), lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        bal(torch.tensor(6.0), torch.tensor(0.5))[0].backward()
        opt.step()
    w = torch.exp(-bal.log_vars).tolist()
    assert w == pytest.approx([1 / 6.0, 1 / 0.5], rel=1e-3)
    assert min(w) > 0.1


def test_unknown_mode_lists_choices():
    with pytest.raises(TrainerError, match="uncertainty\\|sigmoid"):
        Balance("softmax")
