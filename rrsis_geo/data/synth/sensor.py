"""Sensor and acquisition effects for the synthetic generator (``--realism sensor``).

Two parts, both drawn from a chip's realism generator (deterministic per seed):

* :class:`Acquisition` changes how a scene is lit and seen while it is drawn: sun azimuth and
  elevation (shadow direction, length and darkness) and a slight off-nadir lean (the facades of
  buildings and tanks show as a darker sliver beside their roofs). Roofs keep their footprint,
  so masks do not change.
* :func:`apply_sensor` degrades the finished image: haze, exposure and gamma, white balance,
  blur (optics/MTF), noise, a panchromatic variant (grey in all three bands, as the model reads
  a 1-band raster; only where the sentence names no colour) and a JPEG round trip.

Strengths are random per chip and bounded so that the colours that sentences name stay true
(a white roof stays bright, a red car stays red: see tests/test_synth_realism.py).
:func:`nir_band` synthesises a near-infrared band for 4-band (RGB+NIR) scenes.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

FACADE = ("building", "storage tank")


class Acquisition:
    """Sun and view geometry for one chip or scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.random_sun = rng.random() < 0.6
        self.sun_az = float(rng.uniform(0, 2 * math.pi))
        self.shadow_len = float(rng.uniform(0.45, 1.8))  # x the default length
        self.shadow_dark = float(rng.uniform(0.35, 0.75))
        lean = rng.random() < 0.5
        self.lean = float(rng.uniform(0.15, 0.45)) if lean else 0.0  # px per shadow px
        self.lean_az = float(rng.uniform(0, 2 * math.pi))

    def sun(self, default: float) -> tuple[float, float, float]:
        """(dx, dy, darkness factor) of cast shadows; ``default`` is the plain renderer's angle."""
        if not self.random_sun:
            return math.cos(default), math.sin(default), 0.52
        return (self.shadow_len * math.cos(self.sun_az), self.shadow_len * math.sin(self.sun_az),
                self.shadow_dark)

    def facades(self, img: np.ndarray, objs: list, sweep, colour_of) -> None:
        """Draw the walls of tall objects seen off nadir (before the roofs are drawn).

        ``sweep(o, dx, dy)`` returns (y0, x0, window) of a swept footprint (the renderer's
        shadow helper); ``colour_of(o)`` the object's base RGB.
        """
        if self.lean <= 0:
            return
        h, w = img.shape[:2]
        for o in objs:
            if o.category not in FACADE or o.height <= 0:
                continue
            d = o.height * self.lean
            sy0, sx0, sm = sweep(o, d * math.cos(self.lean_az), d * math.sin(self.lean_az))
            ty0, tx0 = max(0, sy0), max(0, sx0)
            ty1, tx1 = min(h, sy0 + sm.shape[0]), min(w, sx0 + sm.shape[1])
            if ty1 > ty0 and tx1 > tx0:
                wall = np.asarray(colour_of(o), np.float32) * np.float32(
                    self.rng.uniform(0.45, 0.75))
                img[ty0:ty1, tx0:tx1][sm[ty0 - sy0:ty1 - sy0, tx0 - sx0:tx1 - sx0]] = wall


def apply_sensor(img: np.ndarray, rng: np.random.Generator, *, allow_pan: bool = True,
                 pan_p: float = 0.15) -> tuple[np.ndarray, dict[str, Any]]:
    """Random acquisition effects on a uint8 RGB image; returns (new uint8 image, what was done).

    Values stay in 1..255 (0 is the scenes' nodata).
    """
    info: dict[str, Any] = {}
    x = img.astype(np.float32)
    if rng.random() < 0.4:  # haze: blend towards a bright bluish airlight
        a = float(rng.uniform(0.03, 0.22))
        air = np.array([196, 202, 214], np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
        x = x * (1 - a) + air * a
        info["haze"] = round(a, 3)
    if rng.random() < 0.7:  # exposure and gamma
        gain = float(rng.uniform(0.8, 1.2))
        gamma = float(rng.uniform(0.85, 1.15))
        x = 255 * np.power(np.clip(x * gain / 255, 0, 1), gamma)
        info["exposure"] = round(gain, 3)
        info["gamma"] = round(gamma, 3)
    if rng.random() < 0.6:  # white balance
        wb = rng.uniform(0.93, 1.07, 3).astype(np.float32)
        x = x * wb
        info["white_balance"] = [round(float(v), 3) for v in wb]
    pan = allow_pan and rng.random() < pan_p
    if pan:  # a panchromatic sensor: one broad band, read as grey RGB
        grey = x @ np.array([0.30, 0.45, 0.25], np.float32)
        x = np.repeat(grey[..., None], 3, axis=-1)
        info["bands"] = "pan"
    out = np.clip(np.rint(x), 1, 255).astype(np.uint8)
    if rng.random() < 0.6:  # optics / MTF
        sigma = float(rng.uniform(0.3, 1.3))
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sigma)))
        info["blur"] = round(sigma, 3)
    if rng.random() < 0.6:  # read and shot noise
        s = float(rng.uniform(1.0, 5.0))
        y = out.astype(np.float32)
        n = rng.standard_normal(y.shape[:2] if pan else y.shape).astype(np.float32)
        if pan:
            n = n[..., None]
        y += n * (s * np.sqrt(np.maximum(y, 1) / 128))
        out = np.clip(np.rint(y), 1, 255).astype(np.uint8)
        info["noise"] = round(s, 3)
    if rng.random() < 0.5:  # JPEG round trip (most delivered imagery is compressed)
        q = int(rng.integers(40, 93))
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=q)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        if pan:
            out = np.repeat(out.mean(-1, keepdims=True).round().astype(np.uint8), 3, -1)
        out = np.maximum(out, 1)
        info["jpeg"] = q
    return np.ascontiguousarray(out), info


# near-infrared reflectance relative to red, by what a pixel shows (vegetation is bright)
NIR_GAIN = {"tree": 3.2, "pond": 0.25, "road": 1.05, "building": 1.0, "car": 1.0, "truck": 1.0,
            "bus": 1.0, "storage tank": 1.0, "tennis court": 1.1, "basketball court": 1.0}


def nir_band(img: np.ndarray, label: np.ndarray, categories: dict[int, str]) -> np.ndarray:
    """A synthetic near-infrared band (uint8) for a rendered RGB image and its label map.

    Background follows a greenness index (green vegetation reflects NIR strongly); objects use
    :data:`NIR_GAIN` times their red band. A simple model, not a radiative-transfer one.
    """
    x = img.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    green = np.clip((g - np.maximum(r, b)) / 40.0, 0, 1)
    nir = r * (1 + 2.2 * green) + 10
    for oid, cat in categories.items():
        sel = label == oid
        if sel.any():
            nir[sel] = r[sel] * NIR_GAIN.get(cat, 1.0) + (40 if cat == "tree" else 0)
    return np.clip(np.rint(nir), 1, 255).astype(np.uint8)


BANDS = ("rgb", "rgbn", "pan")


def scene_bands(img: np.ndarray, label: np.ndarray, categories: dict[int, str],
                valid: np.ndarray, bands: str) -> np.ndarray:
    """A rendered RGB scene as ``rgb`` [H, W, 3], ``rgbn`` [H, W, 4] or ``pan`` [H, W, 1]
    (nodata 0 outside ``valid``, 1..255 inside)."""
    if bands == "rgb":
        return img
    if bands == "rgbn":
        out = np.concatenate([img, nir_band(img, label, categories)[..., None]], axis=-1)
    elif bands == "pan":
        grey = img.astype(np.float32) @ np.array([0.30, 0.45, 0.25], np.float32)
        out = np.clip(np.rint(grey), 1, 255).astype(np.uint8)[..., None]
    else:
        from rrsis_geo.errors import UsageError

        raise UsageError(f"bands must be one of {', '.join(BANDS)}, got {bands!r}")
    out[~valid] = 0
    return out
