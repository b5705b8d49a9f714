"""Image/mask preprocessing shared by the dataset readers (docs/fianet.md §Datasets).

Images are resized with PIL bilinear (what upstream's torchvision-on-PIL resize does) and kept as
uint8 until the last moment, so whole small datasets fit in memory; masks are resized NEAREST.
Augmentations are deliberately mild: no flips, rotations, crops or hue changes, because referring
expressions name sides ("left"), positions ("upper") and colours ("red roof").
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from rrsis_geo.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """Resize an RGB image to ``size``×``size`` (aspect ratio not kept, as upstream).

    Args:
        image: uint8 array [H, W, 3].
        size: output side length S.

    Returns:
        uint8 tensor [3, S, S].
    """
    if image.shape[0] != size or image.shape[1] != size:
        image = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C"))


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """Resize a binary mask NEAREST to ``size``×``size``.

    Args:
        mask: array [H, W], any integer/bool dtype with values {0, 1}.
        size: output side length S.

    Returns:
        uint8 tensor [S, S] with values {0, 1}.
    """
    mask = mask.astype(np.uint8)  # copies: the tensor owns writable memory
    if mask.shape[0] != size or mask.shape[1] != size:
        mask = np.array(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return torch.from_numpy(np.ascontiguousarray(mask))


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] → float32 ImageNet-normalized tensor of the same shape."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (image.to(torch.float32) / 255.0 - mean) / std


def brightness_jitter(
    image: torch.Tensor, amount: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Scale all channels of a uint8 image by one factor in [1-amount, 1+amount].

    One factor for all channels keeps hues (colour words) intact; a small ``amount`` (≈0.1) keeps
    "dark"/"bright" words meaningful.

    Args:
        image: uint8 tensor [3, H, W].
        amount: maximum relative change; 0 returns the input unchanged.
        generator: optional torch RNG for reproducibility.

    Returns:
        uint8 tensor [3, H, W].
    """
    if amount <= 0:
        return image
    factor = 1.0 + (torch.rand((), generator=generator).item() * 2.0 - 1.0) * amount
    return (image.to(torch.float32) * factor).round_().clamp_(0, 255).to(torch.uint8)
