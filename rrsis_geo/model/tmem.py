"""TMEM: text-aware multi-scale enhancement (docs/fianet.md §TMEM).

All four stage maps are average-pooled to the coarsest grid, concatenated, reduced to a quarter of
the channels, refined by ``num_blocks`` pre-norm blocks of word attention + FFN, expanded back and
split per scale; each scale is then blended with its own map by a :class:`ScaleAwareGate`.
Channel counts follow the backbone (official: 128+256+512+1024 = 1920, hidden 480).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis_geo.model.fiam import SpatialImageLanguageAttention
from rrsis_geo.model.ops import module_linear


def conv1x1(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1×1 ``Conv2d`` as one batched matmul (PyTorch's CPU fallback for 1×1 convs is slower)."""
    b, c, h, w = x.shape
    weight = conv.weight.view(conv.out_channels, c)
    out = torch.matmul(weight, x.reshape(b, c, h * w))
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1)
    return out.view(b, conv.out_channels, h, w)


class ScaleAwareGate(nn.Module):
    """``BN(Conv(local)) ⊙ up(hsigmoid(BN(Conv(g)))) + up(BN(Conv(g)))`` (bilinear, no corners)."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.local_embedding = nn.Conv2d(inp, oup, 1)
        self.bn1 = nn.BatchNorm2d(oup)
        self.global_embedding = nn.Conv2d(inp, oup, 1)
        self.bn2 = nn.BatchNorm2d(oup)
        self.global_act = nn.Conv2d(inp, oup, 1)
        self.bn3 = nn.BatchNorm2d(oup)

    def forward(self, x_local: Tensor, x_global: Tensor) -> Tensor:
        """x_local ``[B, C, H, W]``, x_global ``[B, C, h, w]`` -> ``[B, C, H, W]``."""
        size = x_local.shape[-2:]
        local = self.bn1(conv1x1(self.local_embedding, x_local))
        glob = self.bn2(conv1x1(self.global_embedding, x_global))
        act = F.hardsigmoid(self.bn3(conv1x1(self.global_act, x_global)))  # = ReLU6(x + 3) / 6
        glob = F.interpolate(glob, size=size, mode="bilinear", align_corners=False)
        act = F.interpolate(act, size=size, mode="bilinear", align_corners=False)
        return local * act + glob


class FeedForward(nn.Module):
    """Linear → GELU → Linear (keys ``net.0``, ``net.3``; dropout slots kept for the names)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        fc1, drop1, fc2, drop2 = self.net[0], self.net[2], self.net[3], self.net[4]
        return drop2(module_linear(fc2, drop1(module_linear(fc1, x, "gelu"))))


class TMEMBlock(nn.Module):
    """``Z += SILA(LN(Z), L)``; ``Z += FFN(LN(Z))`` over the pooled tokens ``[B, N, C]``."""

    def __init__(self, dim: int, lang_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.tma = SpatialImageLanguageAttention(dim, lang_dim, dim, dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 2 * dim)

    def forward(self, x: Tensor, lang: Tensor, mask: Tensor) -> Tensor:
        x = x + self.tma(self.norm1(x), lang, mask)
        return x + self.ff(self.norm2(x))


class TMEM(nn.Module):
    """Text-aware multi-scale enhancement over the 4 backbone maps."""

    def __init__(self, channels: Sequence[int], lang_dim: int, num_blocks: int) -> None:
        super().__init__()
        self.channels = list(channels)
        dim = sum(self.channels)
        hidden = dim // 4
        self.down_channel = nn.Conv2d(dim, hidden, 1)
        self.up_channel = nn.Conv2d(hidden, dim, 1)
        self.block = nn.ModuleList([TMEMBlock(hidden, lang_dim) for _ in range(num_blocks)])
        self.bn = nn.BatchNorm2d(hidden)
        self.fusion = nn.ModuleList([ScaleAwareGate(c, c) for c in self.channels])

    def forward(self, feats: Sequence[Tensor], lang: Tensor, mask: Tensor) -> list[Tensor]:
        """feats: 4 maps ``[B, C_i, H_i, W_i]``; lang ``[B, Ct, L]``; mask ``[B, L]``."""
        size = feats[-1].shape[-2:]
        pooled = torch.cat([F.adaptive_avg_pool2d(f, size) for f in feats], dim=1)
        z = conv1x1(self.down_channel, pooled)
        b, c, h, w = z.shape
        tokens = z.flatten(2).transpose(1, 2)                          # [B, h·w, C]
        for blk in self.block:
            tokens = blk(tokens, lang, mask)
        z = tokens.transpose(1, 2).reshape(b, c, h, w)
        z = conv1x1(self.up_channel, self.bn(z))
        parts = z.split(self.channels, dim=1)
        return [gate(f, g) for gate, f, g in zip(self.fusion, feats, parts)]
