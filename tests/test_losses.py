"""FIANet loss against a hand computation (docs/fianet.md §Training recipe)."""

from __future__ import annotations

import math

import pytest
import torch

from rrsis_geo.train.losses import dice_loss_sum, fianet_loss


def test_loss_matches_hand_computation() -> None:
    # one sample, 1x2 pixels; logits chosen so softmax probs of class 1 are 0.5 and sigmoid(2)
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 2.0]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[0, 1]]])  # [1, 1, 2]
    q = 1 / (1 + math.exp(-2.0))  # p(class 1) at pixel 2
    # weighted CE: (0.9*-log(0.5) + 1.1*-log(q)) / (0.9 + 1.1)
    ce = (0.9 * -math.log(0.5) + 1.1 * -math.log(q)) / 2.0
    # Dice per class: class 0 probs (0.5, 1-q) vs y (1, 0); class 1 probs (0.5, q) vs y (0, 1)
    eps = 1e-6
    d0 = 1 - (2 * 0.5 + eps) / ((0.5 + 1 - q) + 1 + eps)
    d1 = 1 - (2 * q + eps) / ((0.5 + q) + 1 + eps)
    expected = 0.9 * ce + 0.1 * (d0 + d1)
    assert fianet_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_is_summed_over_batch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4)
    target = (torch.rand(1, 4, 4) > 0.5).long()
    one = dice_loss_sum(logits, target)
    three = dice_loss_sum(logits.repeat(3, 1, 1, 1), target.repeat(3, 1, 1))
    assert three.item() == pytest.approx(3 * one.item(), rel=1e-6)


def test_perfect_prediction_has_small_loss_and_gradients_flow() -> None:
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.stack([(1 - target) * 20.0, target * 20.0], dim=1).float().requires_grad_()
    loss = fianet_loss(logits, target)
    assert loss.item() < 1e-3
    wrong = (-logits.detach()).requires_grad_()
    bad = fianet_loss(wrong, target)
    bad.backward()
    assert bad.item() > 1.0
    # the gradient pushes each pixel's logits toward its true class
    assert (wrong.grad[:, 1][target == 1] < 0).all() and (wrong.grad[:, 1][target == 0] > 0).all()
