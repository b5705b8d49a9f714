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


@pytest.mark.parametrize("act", ["none", "gelu"])
def test_module_linear_runs_plain_and_int8_linears(act):
    """module_linear = act(Linear(x)) for an nn.Linear and for its dynamically quantized int8
    copy (whose weight is a method); int8 stays close to fp32 (per-channel weights)."""
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(3, 50, 64, generator=g)
    want = {"none": lambda t: t, "gelu": F.gelu}[act](lin(x))
    q = ops.quantize_linears(torch.nn.Sequential(lin))[0]
    assert not isinstance(q.weight, torch.Tensor)  # really replaced by the int8 module
    with torch.no_grad():
        torch.testing.assert_close(ops.module_linear(lin, x, act), want, atol=1e-5, rtol=1e-5)
        got = ops.module_linear(q, x, act)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    assert not torch.equal(got, want)  # int8 rounding, not the fp32 path
    torch.testing.assert_close(ops.module_bias(q), lin.bias.detach())


def test_int8_fianet_runs_and_agrees_with_fp32():
    """The tiny FIANet layout with int8 Linears: every Swin/TMEM/FIAM Linear is quantized and
    the segmentation stays close to fp32's (argmax agreement; random weights)."""
    from rrsis_geo.model import FIANet, FIANetConfig

    torch.manual_seed(0)
    model = FIANet(FIANetConfig.tiny()).eval()
    q = ops.quantize_linears(model)
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert any(type(m) is torch.nn.Linear for m in model.modules())  # the original is kept
    ids = torch.randint(1000, 8000, (1, 20))
    ids[0, 0] = 101
    attn = torch.zeros(1, 20)
    attn[0, :8] = 1
    obj = torch.zeros(1, 20)
    obj[0, 2:4] = 1
    pos = torch.zeros(1, 20)
    pos[0, 4:6] = 1
    img = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = model(img, ids, attn, obj, pos)
        b = q(img, ids, attn, obj, pos)
    assert b.shape == a.shape and torch.isfinite(b).all()
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.9


def test_precision_int8_is_cpu_only_and_named_in_errors():
    from rrsis_geo.errors import UsageError
    from rrsis_geo.inference.device import apply_precision, resolve_precision

    assert resolve_precision("int8", torch.device("cpu")) is None
    with pytest.raises(UsageError, match="int8 .*CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(UsageError, match="fp16 or int8"):
        resolve_precision("int4", torch.device("cpu"))
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model, dtype = apply_precision(lin, "int8", torch.device("cpu"))
    assert dtype is None and model is not lin and type(model[0]) is not torch.nn.Linear
    model, dtype = apply_precision(lin, "bf16", torch.device("cpu"))
    assert model is lin and dtype == torch.bfloat16
