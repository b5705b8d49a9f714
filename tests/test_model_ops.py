"""The fused oneDNN linear helper agrees with the plain PyTorch path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rrsis_geo.model import ops


@pytest.mark.parametrize("act", ["none", "gelu", "relu", "tanh"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_plain_path(act, with_bias, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 24, generator=g)
    w = torch.randn(16, 24, generator=g) * 0.2
    b = torch.randn(16, generator=g) if with_bias else None
    plain = {"none": lambda t: t, "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh}[act](
        F.linear(x, w, b))
    with torch.no_grad():
        fast = ops.linear(x, w, b, act)
        monkeypatch.setattr(ops, "USE_ONEDNN_LINEAR", False)
        slow = ops.linear(x, w, b, act)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, plain, atol=0, rtol=0)


def test_linear_keeps_autograd_and_autocast():
    x = torch.randn(5, 8, requires_grad=True)
    w = torch.randn(4, 8, requires_grad=True)
    ops.linear(x, w, None, "gelu").sum().backward()  # grad mode: plain, differentiable path
    assert x.grad is not None and w.grad is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.linear(x, w).dtype == torch.bfloat16
