"""Cut the photographic texture bank of the synthetic generator from real orthophotos.

Writes ``rrsis_geo/data/synth/bank/bank.npz`` (package data; ``--realism textures`` of
``rrsis-geo synth``): uint8 RGB patches per class, resampled to about 0.25 m per pixel (the
chips' scale), ``PATCH`` px square, plus ``crown`` patches (one real tree crown each, its box
resized to ``CROWN`` px square). Sources and licences: ``rrsis_geo/data/synth/bank/README.md``.

Inputs (see that README for where each comes from), positional::

    yell_crop2_north.tif yell_crop2_north_boxes.csv   NEON Yellowstone crop, north part:
        only rows 0 .. 850 are read (rows 850 .. 1700 validate the generator ablation)
    deepforest_test_tiled.tif                          Netherlands, 0.25 m, unlabelled
    australia.tif                                      drone, 0.018 m (downsampled)

Usage::

    python scripts/build_texture_bank.py NORTH.tif NORTH_boxes.csv NL.tif AU.tif [OUT.npz]

Deterministic (fixed seed): the same inputs give the same bank.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

PATCH = 48  # px at ~0.25 m = 12 m
CROWN = 32
NEON_MAX_ROW = 850  # rows above this line of the north part are never read
NEON_GSD, NL_GSD, AU_GSD, OUT_GSD = 0.1, 0.25, 0.018, 0.25
SEED = 1717

# hand-picked (x0, y0, x1, y1) pixel boxes on the Netherlands image (0.25 m, 1000 x 1000),
# chosen by eye on a gridded preview; each box holds one land cover only
NL_BOXES: dict[str, list[tuple[int, int, int, int]]] = {
    "water": [(20, 190, 390, 370), (560, 190, 790, 290), (330, 620, 470, 780)],
    "roof": [(165, 610, 285, 705), (0, 820, 230, 1000), (0, 430, 170, 500), (900, 15, 995, 85),
             (200, 525, 300, 600)],
    "asphalt": [(520, 790, 660, 990)],
    "grass": [(730, 640, 800, 700), (820, 420, 880, 470), (870, 630, 960, 690)],
    "ground": [(825, 110, 905, 285), (150, 488, 330, 540)],
    "canopy": [(420, 400, 485, 500), (330, 520, 430, 620), (895, 895, 1000, 1000),
               (410, 100, 560, 190)],
}
# australia.tif (0.018 m): the large crown in the middle, and understory ground at the edges
AU_BOXES = {"canopy": [(210, 210, 650, 560)], "ground": [(0, 600, 300, 708)]}
PER_BOX = {"water": 14, "roof": 10, "asphalt": 30, "grass": 12, "ground": 10, "canopy": 10}
NEON_GROUND, NEON_CANOPY, NEON_CROWNS = 50, 30, 150


def _resample(img: np.ndarray, factor: float) -> np.ndarray:
    """Resize an [H, W, 3] uint8 image by ``factor`` (< 1 shrinks) with an area-like filter."""
    h, w = img.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def _random_patches(rng: np.random.Generator, img: np.ndarray, box, n: int) -> list[np.ndarray]:
    x0, y0, x1, y1 = box
    sub = img[y0:y1, x0:x1]
    h, w = sub.shape[:2]
    if h < PATCH or w < PATCH:  # small box: stretch it to a patch
        return [np.asarray(Image.fromarray(sub).resize((PATCH, PATCH),
                                                       Image.Resampling.BILINEAR))]
    out = []
    for _ in range(n):
        y = int(rng.integers(0, h - PATCH + 1))
        x = int(rng.integers(0, w - PATCH + 1))
        out.append(sub[y:y + PATCH, x:x + PATCH])
    return out


def _read_rgb(path: str, rows: int | None = None) -> np.ndarray:
    with rasterio.open(path) as ds:
        h = ds.height if rows is None else min(rows, ds.height)
        return ds.read([1, 2, 3], window=((0, h), (0, ds.width))).transpose(1, 2, 0)


def build(neon_tif: str, neon_csv: str, nl_tif: str, au_tif: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    bank: dict[str, list[np.ndarray]] = {k: [] for k in PER_BOX}
    bank["crown"] = []

    nl = _read_rgb(nl_tif)
    for cls, boxes in NL_BOXES.items():
        for box in boxes:
            bank[cls] += _random_patches(rng, nl, box, PER_BOX[cls])

    au = _read_rgb(au_tif)
    f = AU_GSD / OUT_GSD * 3  # the drone crown kept at ~0.08 m so it fills a patch
    for cls, boxes in AU_BOXES.items():
        for x0, y0, x1, y1 in boxes:
            sub = _resample(au[y0:y1, x0:x1], f)
            bank[cls] += _random_patches(rng, sub, (0, 0, sub.shape[1], sub.shape[0]), 4)

    neon = _read_rgb(neon_tif, NEON_MAX_ROW)
    boxes = []
    with open(neon_csv, newline="") as fh:
        for r in csv.DictReader(fh):
            b = tuple(int(float(r[k])) for k in ("xmin", "ymin", "xmax", "ymax"))
            if b[3] <= NEON_MAX_ROW:  # crowns wholly inside the rows read
                boxes.append(b)
    crown_mask = np.zeros(neon.shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        crown_mask[y0:y1, x0:x1] = True
    near = np.zeros_like(crown_mask)  # within 4 m of a crown box (crowns and their shadows)
    pad = 40
    for x0, y0, x1, y1 in boxes:
        near[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = True
    side = round(PATCH * OUT_GSD / NEON_GSD)  # 120 px at 0.1 m = 12 m
    got, tries = 0, 0
    while got < NEON_GROUND and tries < 20000:
        tries += 1
        y = int(rng.integers(0, neon.shape[0] - side))
        x = int(rng.integers(0, neon.shape[1] - side))
        if near[y:y + side, x:x + side].any():
            continue
        bank["ground"].append(_resample(neon[y:y + side, x:x + side], NEON_GSD / OUT_GSD))
        got += 1
    # canopy: windows mostly covered by crown boxes (a forest canopy seen from above)
    got, tries = 0, 0
    while got < NEON_CANOPY and tries < 20000:
        tries += 1
        y = int(rng.integers(0, neon.shape[0] - side))
        x = int(rng.integers(0, neon.shape[1] - side))
        if crown_mask[y:y + side, x:x + side].mean() < 0.55:
            continue
        bank["canopy"].append(_resample(neon[y:y + side, x:x + side], NEON_GSD / OUT_GSD))
        got += 1
    big = [b for b in boxes if min(b[2] - b[0], b[3] - b[1]) >= 14]
    for i in rng.permutation(len(big))[:NEON_CROWNS]:
        x0, y0, x1, y1 = big[int(i)]
        bank["crown"].append(np.asarray(Image.fromarray(neon[y0:y1, x0:x1]).resize(
            (CROWN, CROWN), Image.Resampling.BILINEAR)))
    return {k: np.stack(v).astype(np.uint8) for k, v in bank.items()}


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[4] if len(argv) == 5 else
               Path(__file__).resolve().parents[1] / "rrsis_geo/data/synth/bank/bank.npz")
    bank = build(*argv[:4])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **bank)
    for k, v in bank.items():
        print(f"{k:8s} {v.shape[0]:4d} patches {v.shape[1]}x{v.shape[2]}  mean RGB "
              f"{tuple(int(c) for c in v.reshape(-1, 3).mean(0))}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
