"""Small numerical helpers shared by the FIANet modules.

``linear`` runs CPU fp32 inference through oneDNN's fused linear (+ activation) kernel, which
on our 2-core test machine is ~16 % faster than the default sgemm path for the Swin shapes and
avoids allocating a second buffer for the activation. Everything else (training, autocast,
``torch.compile``, other devices or dtypes) uses the plain ``F.linear`` path; both give the
same numbers up to float rounding (measured ≤ 1.4e-5 absolute on unit-scale inputs).

``module_linear`` applies an ``nn.Linear`` module the same way, or, when the module was replaced
by a dynamically quantized int8 Linear (``--precision int8``, :func:`quantize_linears`), runs
that module's own int8 kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Set to False to force the plain PyTorch path (benchmarks compare both).
USE_ONEDNN_LINEAR = True

_ACTS = {"none": lambda t: t, "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh}


def _onednn_linear():
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # op not built into this torch
        return None


_LINEAR_POINTWISE = _onednn_linear()


def _use_onednn(x: Tensor) -> bool:
    return (USE_ONEDNN_LINEAR and _LINEAR_POINTWISE is not None
            and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()  # the compiler packs F.linear itself
            and torch.backends.mkldnn.is_available())


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, act: str = "none") -> Tensor:
    """``act(x @ weightᵀ + bias)`` for ``x [..., in]``; act in none | gelu (erf) | relu | tanh."""
    if _use_onednn(x):
        # The last argument selects GELU's algorithm ("none" = exact erf form).
        return _LINEAR_POINTWISE(x, weight, bias, act, [], "none" if act == "gelu" else "")
    return _ACTS[act](F.linear(x, weight, bias))


def module_linear(module, x: Tensor, act: str = "none") -> Tensor:
    """``act(module(x))`` for an ``nn.Linear`` (through :func:`linear`) or a dynamically
    quantized Linear (its weight is then a method, and its int8 kernel runs)."""
    weight = module.weight
    if isinstance(weight, Tensor):
        return linear(x, weight, module.bias, act)
    return _ACTS[act](module(x))


def module_bias(module) -> Tensor | None:
    """A Linear's bias, plain or dynamically quantized (where it is a method)."""
    bias = module.bias
    return bias() if callable(bias) else bias


def quantize_linears(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers run int8 dynamic quantization (weights
    int8 per output channel, activations quantized per batch on the fly; CPU only). The 1×1
    convolutions of the fusion modules stay fp32."""
    import warnings

    with warnings.catch_warnings():  # torch 2.14 announces a move of torch.ao.quantization
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8, inplace=False)
