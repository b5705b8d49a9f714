"""Photographic textures for the synthetic generator (``--realism textures``).

The bank (``rrsis_geo/data/synth/bank/bank.npz``, built by ``scripts/build_texture_bank.py``;
sources and licences in ``rrsis_geo/data/synth/bank/README.md``) holds small uint8 RGB patches of
real orthophotos at about 0.25 m per pixel: ``ground``, ``grass``, ``canopy``, ``roof``,
``asphalt``, ``water`` (48 px) and ``crown`` (one real tree crown per 32 px patch).

:class:`Texturer` paints them into a rendered canvas, randomly mixed with the procedural look:

* ground: patches of one or two land covers quilted with feathered seams, blended over the
  procedural ground;
* trees: a real crown resized to the tree's footprint;
* roofs, roads: the *luminance detail* of a roof or asphalt patch multiplies the rendered colour
  (its mean stays ~1), so the colour a sentence names ("the white building") stays true;
* ponds: real water blended over the procedural water.

Vehicles, tanks and courts keep their procedural look (small, colour-defining). Only pixels
change; footprints, labels and sentences never do. All draws come from the ``rng`` given, so a
chip stays deterministic per seed.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image

BANK_FILE = "bank.npz"
GROUND_CLASSES = ("ground", "grass")


@lru_cache(maxsize=1)
def load_bank() -> dict[str, np.ndarray]:
    """The texture bank shipped with the package: class name -> uint8 [N, P, P, 3]."""
    ref = resources.files("rrsis_geo.data.synth").joinpath("bank", BANK_FILE)
    with resources.as_file(ref) as path, np.load(path) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def _tent(p: int, ov: int) -> np.ndarray:
    """Feathering weight of a p x p patch whose borders of ``ov`` px overlap the neighbours."""
    r = np.ones(p, np.float32)
    ramp = (np.arange(ov, dtype=np.float32) + 1) / (ov + 1)
    r[:ov], r[p - ov:] = ramp, ramp[::-1]
    return np.outer(r, r)


def _orient(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    k = int(rng.integers(0, 8))
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


def quilt(rng: np.random.Generator, patches: list[np.ndarray], h: int, w: int,
          share: float = 1.0, ov: int = 12) -> np.ndarray:
    """An h x w float32 RGB field of randomly oriented patches with feathered seams.

    ``patches`` are one or two patch stacks [N, P, P, 3]; the first fills a ``share`` of the
    cells (the others go to the second stack).
    """
    p = patches[0].shape[1]
    step = p - ov
    ny, nx = -(-(h - ov) // step) + 1, -(-(w - ov) // step) + 1
    H, W = (ny - 1) * step + p, (nx - 1) * step + p
    acc = np.zeros((H, W, 3), np.float32)
    wsum = np.zeros((H, W, 1), np.float32)
    tent = _tent(p, ov)[..., None]
    picks = rng.random((ny, nx))
    for iy in range(ny):
        for ix in range(nx):
            stack = patches[0] if (len(patches) == 1 or picks[iy, ix] < share) else patches[1]
            patch = _orient(rng, stack[int(rng.integers(0, len(stack)))])
            y, x = iy * step, ix * step
            acc[y:y + p, x:x + p] += patch * tent
            wsum[y:y + p, x:x + p] += tent
    oy, ox = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return acc[oy:oy + h, ox:ox + w] / wsum[oy:oy + h, ox:ox + w]


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    if a.shape[:2] == (h, w):
        return a
    chans = [np.asarray(Image.fromarray(a[..., c]).resize((w, h), Image.Resampling.BILINEAR))
             for c in range(a.shape[2])]
    return np.stack(chans, -1)


def _detail(rng: np.random.Generator, stack: np.ndarray, h: int, w: int, strength: float
            ) -> np.ndarray:
    """Multiplicative luminance detail [h, w, 1] with mean ~1 from a quilt of ``stack``."""
    lum = quilt(rng, [stack], h, w).mean(-1, keepdims=True)
    d = lum / max(float(lum.mean()), 1.0)
    np.clip(d, 0.55, 1.45, out=d)
    return 1 + strength * (d - 1)


class Texturer:
    """Per-chip (or per-scene) texturing decisions, drawn once from ``rng``.

    Args:
        rng: the chip's realism generator (not the layout generator).
        scale: pixels per chip pixel (``CHIP_GSD / gsd``); the bank is at the chips' 0.25 m.
        p: probability that each part (ground, each object) gets a photographic texture.
    """

    def __init__(self, rng: np.random.Generator, scale: float = 1.0, p: float = 0.75):
        self.rng, self.scale = rng, scale
        self.bank = load_bank()
        self.p = p

    def ground(self, img: np.ndarray) -> np.ndarray:
        """Blend quilted real ground over the procedural ground ``img`` (float32, in place)."""
        rng = self.rng
        if rng.random() >= self.p:
            return img
        h, w = img.shape[:2]
        a, b = (str(c) for c in rng.choice(GROUND_CLASSES, size=2))
        hs, ws = max(8, round(h / self.scale)), max(8, round(w / self.scale))
        field_ = quilt(rng, [self.bank[a], self.bank[b]], hs, ws,
                       share=float(rng.uniform(0.3, 1.0)))
        if (hs, ws) != (h, w):
            field_ = _resize(field_, h, w)
        # a little tint so real ground is not always the same few colours
        field_ *= rng.uniform(0.85, 1.12, size=3).astype(np.float32)
        alpha = np.float32(rng.uniform(0.6, 1.0))
        img *= 1 - alpha
        img += alpha * field_
        return img

    def obj(self, img: np.ndarray, o) -> None:
        """Texture the rendered pixels of object ``o`` (an ``_Obj``) in ``img`` (float32)."""
        rng = self.rng
        cat = o.category
        if cat not in ("tree", "building", "road", "pond") or rng.random() >= self.p:
            return
        h, w = o.m.shape
        sub = img[o.y0:o.y0 + h, o.x0:o.x0 + w]
        m = o.m
        if cat == "tree":
            crowns = self.bank["crown"]
            crown = _orient(rng, crowns[int(rng.integers(0, len(crowns)))])
            tex = _resize(crown, h, w) * rng.uniform(0.85, 1.1, size=3).astype(np.float32)
            alpha = np.float32(rng.uniform(0.7, 1.0))
            sub[m] = sub[m] * (1 - alpha) + tex[m] * alpha
        elif cat == "pond":
            tex = quilt(rng, [self.bank["water"]], h, w)
            alpha = np.float32(rng.uniform(0.5, 1.0))
            sub[m] = sub[m] * (1 - alpha) + tex[m] * alpha
        else:
            stack = self.bank["roof" if cat == "building" else "asphalt"]
            det = _detail(rng, stack, h, w, float(rng.uniform(0.4, 1.0)))
            sub[m] = sub[m] * det[m]
