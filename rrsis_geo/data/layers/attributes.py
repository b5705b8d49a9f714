"""Per-object attributes measured in a chip: colour from the object's own pixels.

Colour: every pixel of the object that no other labelled object covers is classified in HSV
(:func:`pixel_colours`): pixels with saturation below :data:`ACHROMATIC_S` (or very dark) are
achromatic and named by lightness - ``white`` (light), ``grey``, ``dark``; the others by hue -
red, orange, brown (dark orange/red), yellow, green, blue, purple. An object *has* a colour when
at least :data:`DOMINANT` of its pixels carry it, and clearly *lacks* it below :data:`ABSENT`;
in between the colour is ambiguous and no sentence may rest on it.
"""

from __future__ import annotations

import numpy as np

#: a colour word applies when this share of the object's pixels has it ...
DOMINANT = 0.6
#: ... and clearly does not apply below this share
ABSENT = 0.2
#: saturation below which a pixel is achromatic
ACHROMATIC_S = 0.2
#: value (0..1) thresholds of the achromatic words
LIGHT_V = 0.75
DARK_V = 0.3
#: fewer exclusive pixels than this: no colour is measured
MIN_COLOUR_PX = 12

COLOUR_NAMES = ("white", "grey", "dark", "red", "orange", "brown", "yellow", "green", "blue",
                "purple")


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 [N, 3] -> hue in degrees, saturation and value in [0, 1]."""
    x = rgb.astype(np.float32) / 255.0
    mx = x.max(axis=1)
    mn = x.min(axis=1)
    d = mx - mn
    s = np.where(mx > 0, d / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    dd = np.maximum(d, 1e-6)
    h = np.where(mx == r, ((g - b) / dd) % 6.0,
                 np.where(mx == g, (b - r) / dd + 2.0, (r - g) / dd + 4.0)) * 60.0
    h = np.where(d > 0, h, 0.0)
    return h, s, mx


def pixel_colours(rgb: np.ndarray) -> np.ndarray:
    """Colour index (into :data:`COLOUR_NAMES`) of each uint8 RGB pixel [N, 3]."""
    h, s, v = _hsv(rgb)
    out = np.empty(len(rgb), np.int64)
    achro = (s < ACHROMATIC_S) | (v < 0.12)
    idx = {n: i for i, n in enumerate(COLOUR_NAMES)}
    out[:] = idx["grey"]
    out[achro & (v >= LIGHT_V)] = idx["white"]
    out[achro & (v <= DARK_V)] = idx["dark"]
    c = ~achro
    red = c & ((h < 15) | (h >= 330))
    orange = c & (h >= 15) & (h < 40)
    out[red] = idx["red"]
    out[orange] = idx["orange"]
    out[(red | orange) & (v < 0.45)] = idx["brown"]
    out[c & (h >= 40) & (h < 70)] = idx["yellow"]
    out[c & (h >= 70) & (h < 170)] = idx["green"]
    out[c & (h >= 170) & (h < 260)] = idx["blue"]
    out[c & (h >= 260) & (h < 330)] = idx["purple"]
    return out


def colour_shares(image: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """Share of the masked pixels per colour word; None when too few pixels.

    Args:
        image: uint8 [H, W, 3] chip.
        mask: bool [H, W] the object's exclusive pixels.
    """
    px = image[mask]
    if len(px) < MIN_COLOUR_PX:
        return None
    counts = np.bincount(pixel_colours(px), minlength=len(COLOUR_NAMES))
    return {n: float(c) / len(px) for n, c in zip(COLOUR_NAMES, counts) if c}


def dominant_colour(shares: dict[str, float] | None) -> str | None:
    """The colour word of an object, or None when no colour dominates."""
    if not shares:
        return None
    word, share = max(shares.items(), key=lambda kv: kv[1])
    return word if share >= DOMINANT else None


def colour_state(shares: dict[str, float] | None, word: str) -> str:
    """'in', 'out' or 'ambiguous': does ``word`` describe the object?"""
    if not shares:
        return "ambiguous"
    s = shares.get(word, 0.0)
    if s >= DOMINANT:
        return "in"
    if s < ABSENT:
        return "out"
    return "ambiguous"
