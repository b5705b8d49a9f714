"""SimpleDecoding head (LAVT / FIANet, docs/fianet.md §Decoder) with a configurable width."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SimpleDecoding(nn.Module):
    """Top-down decoder: upsample (bilinear, align_corners=True), concat skip, 2×(3×3 conv-BN-ReLU).

    Args:
        channels: backbone channels (C1, C2, C3, C4) from fine to coarse.
        width: hidden width (official: C4 // 2 = 512).
        num_classes: output channels (2: background, referent).
    """

    def __init__(self, channels: Sequence[int], width: int, num_classes: int = 2) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        for tag, cin in (("4", c4 + c3), ("3", width + c2), ("2", width + c1)):
            self.add_module(f"conv1_{tag}", nn.Conv2d(cin, width, 3, padding=1, bias=False))
            self.add_module(f"bn1_{tag}", nn.BatchNorm2d(width))
            self.add_module(f"conv2_{tag}", nn.Conv2d(width, width, 3, padding=1, bias=False))
            self.add_module(f"bn2_{tag}", nn.BatchNorm2d(width))
        self.conv1_1 = nn.Conv2d(width, num_classes, 1)

    def _stage(self, tag: str, x: Tensor, skip: Tensor) -> Tensor:
        # Upsample only when smaller (an equal-size align_corners resize is the identity anyway).
        if x.shape[-2] < skip.shape[-2] or x.shape[-1] < skip.shape[-1]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        x = torch.cat([x, skip], dim=1)
        x = F.relu(getattr(self, f"bn1_{tag}")(getattr(self, f"conv1_{tag}")(x)), inplace=True)
        return F.relu(getattr(self, f"bn2_{tag}")(getattr(self, f"conv2_{tag}")(x)), inplace=True)

    def fold_batchnorms(self) -> None:
        """Fold each BatchNorm's eval statistics into the convolution before it (inference
        copies only: the BNs become identities and stop tracking). Same logits up to float
        rounding; one pass over each feature map fewer, which ``torch.compile`` does not fold
        by itself here."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for tag in ("4", "3", "2"):
            for i in ("1", "2"):
                conv, bn = getattr(self, f"conv{i}_{tag}"), getattr(self, f"bn{i}_{tag}")
                if isinstance(bn, nn.BatchNorm2d):
                    setattr(self, f"conv{i}_{tag}", fuse_conv_bn_eval(conv.eval(), bn.eval()))
                    setattr(self, f"bn{i}_{tag}", nn.Identity())

    def forward(self, c4: Tensor, c3: Tensor, c2: Tensor, c1: Tensor) -> Tensor:
        """Maps ``[B, C_i, H_i, W_i]`` -> logits ``[B, num_classes, H_1, W_1]``."""
        x = self._stage("4", c4, c3)
        x = self._stage("3", x, c2)
        x = self._stage("2", x, c1)
        return self.conv1_1(x)
