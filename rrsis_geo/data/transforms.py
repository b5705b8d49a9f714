"""Image/mask preprocessing shared by the dataset readers (docs/fianet.md §Datasets).

Images are resized with PIL bilinear (what upstream's torchvision-on-PIL resize does) and kept as
uint8 until the last moment, so whole small datasets fit in memory; masks are resized NEAREST.
Augmentations respect the sentence, because referring expressions name sides ("left"),
positions ("upper") and colours ("red roof"):

- :func:`brightness_jitter` (one factor for all channels) keeps hues and "dark"/"bright" words;
- :func:`flip_sample` mirrors the pixels, and :func:`mirror_expression` the sentence's direction
  words with them ("the tree on the left" flipped left-right is "the tree on the right");
- :func:`colour_jitter` (saturation, white balance, contrast, sometimes grey) changes the look
  of a sensor or a season, and is applied only to sentences without a colour word
  (:func:`names_colour`).
"""

from __future__ import annotations

import re

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


#: direction words and their mirror images, left-right and top-bottom (all lowercase)
_H_MIRROR = {"left": "right", "west": "east", "western": "eastern", "leftmost": "rightmost",
             "westernmost": "easternmost", "westward": "eastward"}
_V_MIRROR = {"top": "bottom", "upper": "lower", "north": "south", "northern": "southern",
             "above": "below", "topmost": "bottommost", "uppermost": "lowermost",
             "northernmost": "southernmost", "northward": "southward"}


def _both_ways(table: dict[str, str]) -> dict[str, str]:
    return {**table, **{v: k for k, v in table.items()}}


_MIRRORS = {axis: _both_ways(t) for axis, t in (("h", _H_MIRROR), ("v", _V_MIRROR))}
_MIRROR_RE = {axis: re.compile(r"\b(" + "|".join(sorted(t, key=len, reverse=True)) + r")\b",
                               re.IGNORECASE)
              for axis, t in _MIRRORS.items()}


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def mirror_expression(expression: str, horizontal: bool, vertical: bool) -> str:
    """The sentence that describes the image flipped left-right and/or top-bottom.

    Direction words swap with their mirror image (left/right, west/east, top/bottom,
    upper/lower, north/south, above/below and their -ern/-most forms); "north-west" becomes
    "north-east" flipped left-right. Other words are untouched ("bright" is not "right").

    >>> mirror_expression("the tree in the upper left", True, False)
    'the tree in the upper right'
    >>> mirror_expression("the car north-west of the pond", True, True)
    'the car south-east of the pond'
    """
    for axis, on in (("h", horizontal), ("v", vertical)):
        if on:
            table = _MIRRORS[axis]
            expression = _MIRROR_RE[axis].sub(
                lambda m, t=table: _same_case(t[m.group(1).lower()], m.group(1)), expression)
    return expression


def flip_sample(tensors: list[torch.Tensor | None], horizontal: bool,
                vertical: bool) -> list[torch.Tensor | None]:
    """Flip image/mask tensors [..., H, W] left-right and/or top-bottom (None stays None)."""
    dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
    if not dims:
        return list(tensors)
    return [None if t is None else torch.flip(t, dims) for t in tensors]


#: words that name a colour or a tone: :func:`colour_jitter` leaves such sentences alone
COLOUR_TERMS = ("white", "grey", "gray", "black", "dark", "light", "bright", "pale", "red",
                "orange", "brown", "yellow", "green", "blue", "purple", "pink", "silver",
                "tan", "beige", "golden", "reddish", "whitish", "bluish", "colour", "color",
                "coloured", "colored")
_COLOUR_RE = re.compile(r"\b(" + "|".join(COLOUR_TERMS) + r")(?:ish)?\b", re.IGNORECASE)


def names_colour(expression: str) -> bool:
    """Whether the sentence names a colour or a tone (:data:`COLOUR_TERMS`).

    >>> names_colour("the red roof"), names_colour("the trees on the right")
    (True, False)
    """
    return _COLOUR_RE.search(expression) is not None


def colour_jitter(
    image: torch.Tensor, amount: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Change the look of a uint8 image the way another sensor, season or light would.

    With ``a = amount``: saturation scaled by a factor in [1-a, 1+a], each channel's gain (white
    balance) by one in [1-a/4, 1+a/4], contrast about the image mean by one in [1-a/2, 1+a/2],
    and with probability a/3 the image becomes grey (a panchromatic look). Shapes and positions
    are untouched; use it only for sentences without colour words (:func:`names_colour`).

    Args:
        image: uint8 tensor [3, H, W].
        amount: strength in [0, 1]; 0 returns the input unchanged.
        generator: optional torch RNG for reproducibility.

    Returns:
        uint8 tensor [3, H, W].
    """
    if amount <= 0:
        return image
    r = torch.rand(6, generator=generator).tolist()
    x = image.to(torch.float32)
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
    if r[0] < amount / 3.0:
        x = grey.expand_as(x).clone()
    else:
        sat = 1.0 + (2.0 * r[1] - 1.0) * amount
        x = grey + (x - grey) * sat
        gains = torch.tensor([1.0 + (2.0 * g - 1.0) * amount / 4.0 for g in r[2:5]])
        x = x * gains.view(3, 1, 1)
    contrast = 1.0 + (2.0 * r[5] - 1.0) * amount / 2.0
    mean = x.mean()
    x = mean + (x - mean) * contrast
    return x.round_().clamp_(0, 255).to(torch.uint8)
