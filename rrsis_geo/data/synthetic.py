"""Synthetic aerial referring scenes: chips for training/evaluation and large georeferenced scenes.

A procedural renderer (numpy only) draws textured ground, a road with lane markings, buildings
(rectangles, L-shapes, gable or flat roofs) with cast shadows, cars/trucks/buses, round tree
canopies, ponds, storage tanks and tennis/basketball courts. Every sample comes with ONE referring
expression, the exact mask of its referent and the union mask of every object of the named
category (for the "all objects of that category" baseline).

Public API:
    generate_chip(seed, size=192, *, etype=None) -> Chip
    write_chips(out_dir, count, size=192, seed=0, split="train", progress=None,
                absent_fraction=0.0) -> records
    generate_scene(seed, size=4096, *, gsd=CHIP_GSD, nodata_margin=True, n_targets=6,
                   n_absent=2) -> Scene
    write_scene(out_tif, size=4096, seed=0, *, gsd=CHIP_GSD, nodata_margin=True, epsg=32633,
                n_targets=6, n_absent=2, progress=None) -> rows   (+ targets_path(out_tif))
    generate_mosaic_3x3(seed, chip_size=192) -> Scene;  write_mosaic_3x3(out_tif, seed, ...)

Ground scale (GSD): chips represent :data:`CHIP_GSD` = 0.25 m per pixel, so a car is about
18 x 8 px, a truck 42 x 10, a bus 48 x 11, a building 26-88 px long, a storage tank 26-76 px
across, a tennis court 96 x 44 px, and a 192 px chip covers 48 m x 48 m. Scenes use the same
scale by default (pixel sizes identical to the chips); another ``gsd`` keeps objects at their
metric size (0.5 m/px halves every object in pixels).

Frame conventions: image rows grow downwards; "top", "upper", "north" mean small row numbers
(north = up), "left"/"west" small column numbers. Position words use the object's mask centroid
in frame fractions: "left" = x < 0.40 with every same-category distractor at x > 0.55 (corners:
< 0.45 on both axes, distractors > 0.55 on either), "centre" = within 0.15 of the middle on both
axes (distractors > 0.30 off). Size words need an area ratio >= 1.8. Relations: "left of" = the
referent's box ends left of the anchor's box (rows overlapping within 20 px), distractors start
right of it; "next to" = box gap <= 10 px, distractors >= 36 px away; "on the road" = 90 % on it.

Expression types (field ``type``) and templates ({n} category word, {c} colour, {z} size word,
{r} region phrase, {rel} relation, {a} anchor):
    category          the {n} | the only {n} | the {n} in the image     (one object of that kind)
    attribute         the {c} {n} | the {n} that is {c} | {c} {n} | the building with the {c}
                      roof | the {c} roofed building | the {z} {n} | the {n} that is the {z} |
                      the {z} {c} {n} | the {c} {n} that is {z}
    spatial-absolute  the {n} {r} | the {n} located {r}
    spatial-relative  the {n} {rel} the {a} | the {n} that is {rel} the {a} | the car (driving)
                      on the road
    combined          the {c|z} {n} {r} | the {c|z} {n} located {r}
Words: categories building, car (also "vehicle" when no truck/bus is present), truck, bus, tree,
storage tank / tank, tennis court, basketball court, pond / water body, road; colours red,
white, grey/gray, blue, brown, black/dark, yellow, green, orange; sizes large, big, small,
little (bigger/larger/smaller for pairs), largest, biggest, smallest; regions e.g. "on the
left", "in the west", "in the upper left", "in the top left corner", "in the north-west",
"in the middle" (scenes: "in the north-east of the scene", ...); relations left of, to the left
of, west of, right of, east of, above, north of, below, south of, next to, beside, near,
close to. All types except ``category`` place 1-3 same-category distractors that differ in the
named attribute/position (``needs_disambiguation = True``, ~70 % of chips).

Negative chips (type ``absent``, only on request: ``generate_chip(etype="absent")`` or
``write_chips(absent_fraction=F)``): the scene is built exactly like a positive chip's, but the
sentence names something the chip does not contain and the mask is EMPTY, so a model run tile
by tile over a large scene learns to paint nothing where the referent is not. Kinds
(``details["absent_kind"]`` / ``details["kind"]``): (a) ``category`` - a category with no object
in the chip (a drawable one or an :data:`ABSENT_ONLY_WORDS` word), in plain/colour/size/region/
relation templates; (b) ``attribute`` - a present category with a palette colour none of its
objects has ("the blue building" when no building is blue); (c) ``spatial`` - a present category
with a region phrase all its objects are clearly out of (the distractor rule ``_region_out``).
``category_union_mask`` is the union of the named category (empty for (a)).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.errors import UsageError

CHIP_GSD = 0.25
"""Metres per pixel that generated chips represent (also the default scene GSD)."""

MIN_CHIP_SIZE = 128
MAX_CHIP_SIZE = 2048
MIN_SCENE_SIZE = 512

# --------------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (176, 54, 44),
    "white": (236, 236, 230),
    "grey": (132, 132, 134),
    "blue": (50, 88, 172),
    "brown": (112, 74, 44),
    "black": (34, 34, 38),
    "yellow": (228, 194, 36),
    "green": (52, 128, 70),
    "orange": (214, 116, 38),
}
# a tank's "grey" is lighter than a car's so it still reads as a metal roof
TANK_GREY = (150, 152, 156)
COURT_RED = (170, 84, 58)  # clay

PALETTES: dict[str, list[str]] = {
    "building": ["red", "white", "grey", "blue", "brown"],
    "car": ["red", "white", "black", "blue", "yellow", "grey"],
    "truck": ["white", "red", "blue", "yellow"],
    "bus": ["yellow", "red", "white", "blue"],
    "storage tank": ["white", "grey"],
    "tennis court": ["green", "blue", "red"],
    "basketball court": ["orange", "blue", "green"],
}
COLOUR_WORDS: dict[str, list[str]] = {
    "grey": ["grey", "gray"],
    "red": ["red"],
    "white": ["white"],
    "blue": ["blue"],
    "brown": ["brown"],
    "black": ["black", "dark"],
    "yellow": ["yellow"],
    "green": ["green"],
    "orange": ["orange"],
}

CATEGORIES = [
    "building", "car", "truck", "bus", "tree", "storage tank", "tennis court",
    "basketball court", "pond", "road",
]
VEHICLES = ("car", "truck", "bus")
#: vehicle footprint at chip scale: (length range px, width range px, height px for the shadow)
VEHICLE_DIMS = {
    "car": ((17, 20), (7.5, 8.5), 2.0),
    "truck": ((38, 46), (10, 11), 4.0),
    "bus": ((46, 52), (10.5, 11.5), 4.5),
}
FLAT = ("pond", "tennis court", "basketball court")

CATEGORY_WORDS: dict[str, list[str]] = {
    "building": ["building"],
    "car": ["car"],
    "truck": ["truck"],
    "bus": ["bus"],
    "tree": ["tree"],
    "storage tank": ["storage tank", "storage tank", "tank"],
    "tennis court": ["tennis court"],
    "basketball court": ["basketball court"],
    "pond": ["pond", "pond", "water body"],
    "road": ["road"],
}
# RRSIS-D words never rendered: used by "absent" scene targets
ABSENT_ONLY_WORDS = ["airplane", "ship", "windmill", "bridge", "chimney", "dam"]

REGIONS = ["left", "right", "top", "bottom", "upper left", "upper right", "lower left",
           "lower right", "center"]
REGION_PHRASES: dict[str, list[str]] = {
    "left": ["on the left", "on the left side", "in the west", "at the left"],
    "right": ["on the right", "on the right side", "in the east", "at the right"],
    "top": ["at the top", "in the upper part", "in the north", "at the top of the image"],
    "bottom": ["at the bottom", "in the lower part", "in the south", "at the bottom of the image"],
    "upper left": ["in the upper left", "in the top left corner", "in the north-west",
                   "at the top left"],
    "upper right": ["in the upper right", "in the top right corner", "in the north-east",
                    "at the top right"],
    "lower left": ["in the lower left", "in the bottom left corner", "in the south-west",
                   "at the bottom left"],
    "lower right": ["in the lower right", "in the bottom right corner", "in the south-east",
                    "at the bottom right"],
    "center": ["in the middle", "in the center", "in the centre of the image"],
}
SCENE_REGION_PHRASES: dict[str, list[str]] = {
    "left": ["in the west of the scene", "on the western side of the scene",
             "on the left of the scene"],
    "right": ["in the east of the scene", "on the eastern side of the scene",
              "on the right of the scene"],
    "top": ["in the north of the scene", "in the northern part of the scene",
            "at the top of the scene"],
    "bottom": ["in the south of the scene", "in the southern part of the scene",
               "at the bottom of the scene"],
    "upper left": ["in the north-west of the scene", "in the upper left of the scene"],
    "upper right": ["in the north-east of the scene", "in the upper right of the scene"],
    "lower left": ["in the south-west of the scene", "in the lower left of the scene"],
    "lower right": ["in the south-east of the scene", "in the lower right of the scene"],
    "center": ["in the middle of the scene", "in the centre of the scene"],
}
RELATION_PHRASES: dict[str, list[str]] = {
    "left": ["left of", "to the left of", "west of", "on the left of"],
    "right": ["right of", "to the right of", "east of", "on the right of"],
    "above": ["above", "north of", "to the north of"],
    "below": ["below", "south of", "to the south of"],
    "near": ["next to", "beside", "near", "close to"],
    "on": ["on"],
}
# referent category -> anchors it may be related to
RELATION_ANCHORS: dict[str, list[str]] = {
    "car": ["truck", "bus", "building", "pond", "road"],
    "truck": ["building", "pond", "storage tank"],
    "bus": ["building", "pond"],
    "tree": ["pond", "building", "tennis court", "basketball court"],
    "building": ["pond", "tennis court", "storage tank", "basketball court"],
    "storage tank": ["building", "pond"],
}

TYPE_WEIGHTS = {
    "category": 0.28, "attribute": 0.22, "spatial-absolute": 0.22, "spatial-relative": 0.14,
    "combined": 0.14,
}
# "absent" (negative) chips: never drawn by TYPE_WEIGHTS, only asked for (etype="absent" or
# write_chips(absent_fraction=...)); their sentence names something the chip does not contain
ABSENT_TYPE = "absent"
ABSENT_KIND_WEIGHTS = {"category": 0.4, "attribute": 0.3, "spatial": 0.3}
ABSENT_KIND_LETTER = {"category": "a", "attribute": "b", "spatial": "c"}
# how often each category is the referent (larger objects are favoured: they are what a small
# model can segment well; cars stay common enough to learn)
REFERENT_WEIGHTS = {
    "building": 0.22, "storage tank": 0.15, "car": 0.12, "tree": 0.09, "pond": 0.08,
    "tennis court": 0.07, "basketball court": 0.06, "truck": 0.08, "bus": 0.06, "road": 0.03,
}
CLUTTER_WEIGHTS = {
    "tree": 0.34, "building": 0.2, "car": 0.16, "storage tank": 0.06, "truck": 0.05,
    "bus": 0.04, "pond": 0.06, "tennis court": 0.045, "basketball court": 0.045,
}

# sizes in chip pixels (CHIP_GSD), scaled by canvas.scale for other GSDs
SIZE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    # building: length range; width derived
    "building": {"small": (26, 34), "medium": (38, 60), "large": (66, 88)},
    "storage tank": {"small": (13, 17), "medium": (19, 25), "large": (29, 38)},  # radius
    "tree": {"small": (7, 9.5), "medium": (10, 14), "large": (16, 21)},  # radius
    "pond": {"small": (17, 22), "medium": (24, 34), "large": (38, 50)},  # radius
}
OBJECT_HALF_EXTENT = {  # rough max half-size at chip scale, used to filter what fits a chip
    "building": 44, "car": 10, "truck": 24, "bus": 26, "tree": 21, "storage tank": 38,
    "tennis court": 48, "basketball court": 53, "pond": 55, "road": 0,
}


# --------------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------------


@dataclass
class Chip:
    """One generated referring sample.

    Attributes:
        image: uint8 [H, W, 3] RGB.
        mask: bool [H, W], the referent's visible pixels (empty only for ``absent`` chips).
        expression: the referring sentence (one line, lower case).
        category: canonical category of the referent (one of :data:`CATEGORIES`).
        type: ``category`` | ``attribute`` | ``spatial-absolute`` | ``spatial-relative`` |
            ``combined`` | ``absent`` (negative: nothing in the chip matches the sentence).
        needs_disambiguation: True when other objects of the same category are present.
        category_union_mask: bool [H, W], all objects of ``category`` (contains ``mask``).
        seed: the seed that regenerates this chip with :func:`generate_chip`.
        details: what the sentence relies on (colour, size, region, relation, anchor, counts).
    """

    image: np.ndarray
    mask: np.ndarray
    expression: str
    category: str
    type: str
    needs_disambiguation: bool
    category_union_mask: np.ndarray
    seed: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Obj:
    """A placed object: footprint window ``m`` at (y0, x0) and what the renderer needs."""

    category: str
    y0: int
    x0: int
    m: np.ndarray
    colour: str | None = None
    size_class: str = "medium"
    height: float = 0.0  # shadow length in px
    p: dict[str, Any] = field(default_factory=dict)
    id: int = 0

    @property
    def area(self) -> int:
        return int(self.m.sum())

    @property
    def centroid(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.m)
        return float(xs.mean() + self.x0 + 0.5), float(ys.mean() + self.y0 + 0.5)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 (exclusive) of the footprint."""
        ys = np.nonzero(self.m.any(axis=1))[0]
        xs = np.nonzero(self.m.any(axis=0))[0]
        return (self.x0 + int(xs[0]), self.y0 + int(ys[0]), self.x0 + int(xs[-1]) + 1,
                self.y0 + int(ys[-1]) + 1)


class _Canvas:
    """Occupancy bookkeeping for placing objects without overlaps."""

    def __init__(self, h: int, w: int, scale: float = 1.0, valid: np.ndarray | None = None):
        self.h, self.w, self.scale = h, w, scale
        self.solid = np.zeros((h, w), bool)  # dilated footprints of solid objects
        self.flat = np.zeros((h, w), bool)  # ponds, courts (dilated)
        self.roadocc = np.zeros((h, w), bool)  # roads (dilated)
        self.valid = valid  # where objects may lie (scene: inside the nodata margin)
        self.objects: list[_Obj] = []
        self.roads: list[_Obj] = []

    def snapshot(self) -> tuple:
        return (self.solid.copy(), self.flat.copy(), self.roadocc.copy(), len(self.objects),
                len(self.roads))

    def restore(self, snap: tuple) -> None:
        self.solid, self.flat, self.roadocc = snap[0], snap[1], snap[2]
        del self.objects[snap[3]:]
        del self.roads[snap[4]:]

    def fits(self, o: _Obj, inside: bool = True) -> bool:
        h, w = o.m.shape
        if o.area < 4:
            return False
        if inside:
            x0, y0, x1, y1 = o.bbox
            pad = 2
            if x0 < pad or y0 < pad or x1 > self.w - pad or y1 > self.h - pad:
                return False
        sl = (slice(o.y0, o.y0 + h), slice(o.x0, o.x0 + w))
        if (self.solid[sl] & o.m).any() or (self.flat[sl] & o.m).any():
            return False
        if o.category not in VEHICLES and (self.roadocc[sl] & o.m).any():
            return False
        if self.valid is not None and not self.valid[sl][o.m].all():
            return False
        return True

    def add(self, o: _Obj, gap: int | None = None) -> _Obj:
        g = gap if gap is not None else max(2, int(round(4 * self.scale)))
        if o.category == "road":
            target, g = self.roadocc, max(1, int(round(3 * self.scale)))
            self.roads.append(o)
        elif o.category in FLAT:
            target = self.flat
        else:
            target = self.solid
        _or_dilated(target, o, g)
        o.id = len(self.objects) + 1
        self.objects.append(o)
        return o


def _or_dilated(target: np.ndarray, o: _Obj, r: int) -> None:
    """target |= footprint of ``o`` dilated by a (2r+1)² square (clipped to the canvas)."""
    h, w = o.m.shape
    big = np.zeros((h + 2 * r, w + 2 * r), bool)
    for dy in range(2 * r + 1):
        big[dy:dy + h, r:r + w] |= o.m
    out = np.zeros_like(big)
    for dx in range(2 * r + 1):
        out[:, dx:dx + w] |= big[:, r:r + w]
    y0, x0 = o.y0 - r, o.x0 - r
    ty0, tx0 = max(0, y0), max(0, x0)
    ty1, tx1 = min(target.shape[0], y0 + h + 2 * r), min(target.shape[1], x0 + w + 2 * r)
    if ty1 > ty0 and tx1 > tx0:
        target[ty0:ty1, tx0:tx1] |= out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]


# --------------------------------------------------------------------------------------------
# geometry: analytic shapes evaluated on pixel centres of a clipped window
# --------------------------------------------------------------------------------------------


def _window(cv: _Canvas, cx: float, cy: float, ex: float, ey: float):
    x0 = max(0, int(math.floor(cx - ex)))
    x1 = min(cv.w, int(math.ceil(cx + ex)) + 1)
    y0 = max(0, int(math.floor(cy - ey)))
    y1 = min(cv.h, int(math.ceil(cy + ey)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return y0, x0, ys, xs


def _local(ys: np.ndarray, xs: np.ndarray, cx: float, cy: float, ang: float):
    """Coordinates along (u) and across (v) an object rotated by ``ang`` (radians)."""
    c, s = math.cos(ang), math.sin(ang)
    dx, dy = xs - cx, ys - cy
    return dx * c + dy * s, -dx * s + dy * c


def _rect_obj(cv: _Canvas, cat: str, cx: float, cy: float, length: float, width: float,
              ang: float, wing: tuple[float, float, float] | None = None) -> _Obj | None:
    """Rotated rectangle (optionally + a wing rectangle: L-shape). ``wing`` = (wl, ww, side)."""
    r = math.hypot(length, width) / 2 + (max(wing[0], wing[1]) * 1.5 if wing else 0)
    win = _window(cv, cx, cy, r, r)
    if win is None:
        return None
    y0, x0, ys, xs = win
    u, v = _local(ys, xs, cx, cy, ang)
    m = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    if wing is not None:
        wl, ww, side = wing
        # wing hangs off one end of the main block, on side ``side`` (+1/-1)
        wu = length / 2 - wl / 2
        wv = side * (width / 2 + ww / 2 - 0.5)
        m |= (np.abs(u - wu) <= wl / 2) & (np.abs(v - wv) <= ww / 2)
    return _Obj(cat, y0, x0, m, p={"cx": cx, "cy": cy, "L": length, "W": width, "ang": ang,
                                   "wing": wing})


def _blob_obj(cv: _Canvas, cat: str, cx: float, cy: float, r0: float, rng: np.random.Generator,
              wobble: float) -> _Obj | None:
    """Star-shaped blob r(θ) = r0 (1 + Σ a_k cos(kθ + φ_k)): trees, ponds; circles if wobble=0."""
    ks = np.arange(2, 6)
    amps = rng.uniform(0, wobble, size=ks.size) / ks ** 0.5 if wobble > 0 else np.zeros(ks.size)
    phases = rng.uniform(0, 2 * math.pi, size=ks.size)
    rmax = r0 * (1 + amps.sum())
    win = _window(cv, cx, cy, rmax, rmax)
    if win is None:
        return None
    y0, x0, ys, xs = win
    dx, dy = xs - cx, ys - cy
    d = np.sqrt(dx * dx + dy * dy)
    if wobble > 0:
        th = np.arctan2(dy, dx)
        rr = r0 * (1 + sum(a * np.cos(k * th + p) for a, k, p in zip(amps, ks, phases)))
    else:
        rr = r0
    m = d <= rr
    return _Obj(cat, y0, x0, m, p={"cx": cx, "cy": cy, "r": r0})


# --------------------------------------------------------------------------------------------
# object factories (sizes in chip px × canvas scale)
# --------------------------------------------------------------------------------------------


def _pick_size(rng: np.random.Generator, cat: str, size_class: str) -> float:
    lo, hi = SIZE_RANGES[cat][size_class]
    return float(rng.uniform(lo, hi))


def make_object(cv: _Canvas, rng: np.random.Generator, cat: str, cx: float, cy: float, *,
                colour: str | None = None, size_class: str = "medium",
                ang: float | None = None) -> _Obj | None:
    """Build (not place) one object of ``cat`` centred near (cx, cy) in canvas pixels."""
    s = cv.scale
    if cat in PALETTES and colour is None:
        colour = str(rng.choice(PALETTES[cat]))
    if ang is None:
        if cat in ("building", "tennis court", "basketball court"):
            ang = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.12))
        else:
            ang = float(rng.uniform(0, math.pi))
    o: _Obj | None
    if cat == "building":
        length = _pick_size(rng, cat, size_class) * s
        width = length * rng.uniform(0.6, 0.85)
        wing = None
        if rng.random() < 0.3:
            wing = (width * rng.uniform(0.5, 0.8), width * rng.uniform(0.45, 0.7),
                    float(rng.choice([-1.0, 1.0])))
        o = _rect_obj(cv, cat, cx, cy, length, width, ang, wing)
        if o is not None:
            o.height = float(rng.uniform(5, 11) * s * (1.2 if size_class == "large" else 1.0))
            o.p["gable"] = wing is None and rng.random() < 0.55
            o.p["vents"] = [(rng.uniform(-0.35, 0.35), rng.uniform(-0.3, 0.3))
                            for _ in range(int(rng.integers(0, 4)))]
    elif cat in VEHICLE_DIMS:
        (l0, l1), (w0, w1), height = VEHICLE_DIMS[cat]
        o = _rect_obj(cv, cat, cx, cy, rng.uniform(l0, l1) * s, rng.uniform(w0, w1) * s, ang)
        if o is not None:
            o.height = height * s
    elif cat == "tennis court":
        o = _rect_obj(cv, cat, cx, cy, rng.uniform(92, 98) * s, rng.uniform(43, 46) * s, ang)
    elif cat == "basketball court":
        o = _rect_obj(cv, cat, cx, cy, rng.uniform(100, 106) * s, rng.uniform(55, 60) * s, ang)
    elif cat == "storage tank":
        r = _pick_size(rng, cat, size_class) * s
        o = _blob_obj(cv, cat, cx, cy, r, rng, 0.0)
        if o is not None:
            o.height = r * rng.uniform(0.45, 0.6)
    elif cat == "tree":
        r = _pick_size(rng, cat, size_class) * s
        o = _blob_obj(cv, cat, cx, cy, r, rng, 0.18)
        if o is not None:
            o.height = r * rng.uniform(0.6, 0.8)
            o.p["tone"] = float(rng.uniform(-1, 1))
    elif cat == "pond":
        r = _pick_size(rng, cat, size_class) * s
        o = _blob_obj(cv, cat, cx, cy, r, rng, 0.35)
    else:
        raise ValueError(f"unknown category {cat!r}")
    if o is None:
        return None
    o.colour, o.size_class = colour, size_class
    o.p.setdefault("ang", ang)
    return o


def _make_road(cv: _Canvas, rng: np.random.Generator, *, horizontal: bool | None = None,
               pos: float | None = None) -> _Obj:
    """A straight 2-lane road across the canvas (axis-aligned, slight tilt sometimes)."""
    s = cv.scale
    width = float(rng.uniform(28, 34) * s)
    if horizontal is None:
        horizontal = bool(rng.random() < 0.5)
    tilt = float(rng.normal(0, 0.08)) if rng.random() < 0.4 else 0.0
    ang = tilt if horizontal else math.pi / 2 + tilt
    span = cv.h if horizontal else cv.w
    if pos is None:
        pos = float(rng.uniform(0.2, 0.8) * span)
    cx, cy = (cv.w / 2, pos) if horizontal else (pos, cv.h / 2)
    length = 2.5 * max(cv.h, cv.w)
    # evaluate on the full canvas band only (the rectangle is very long)
    ext = width / 2 + abs(math.sin(tilt)) * length / 2 + 2
    if horizontal:
        y0, y1 = max(0, int(cy - ext)), min(cv.h, int(cy + ext) + 1)
        x0, x1 = 0, cv.w
    else:
        x0, x1 = max(0, int(cx - ext)), min(cv.w, int(cx + ext) + 1)
        y0, y1 = 0, cv.h
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    u, v = _local(ys, xs, cx, cy, ang)
    m = np.abs(v) <= width / 2
    return _Obj("road", y0, x0, m, p={"cx": cx, "cy": cy, "W": width, "ang": ang})


def _on_road_point(rng: np.random.Generator, cv: _Canvas, road: _Obj) -> tuple[float, float, float]:
    """A random lane centre point on ``road`` inside the canvas, with the road's heading."""
    p = road.p
    ang = p["ang"]
    c, s_ = math.cos(ang), math.sin(ang)
    t = float(rng.uniform(-0.5, 0.5) * max(cv.w, cv.h))
    lane = float(rng.choice([-1.0, 1.0])) * p["W"] / 4
    x = p["cx"] + t * c - lane * s_
    y = p["cy"] + t * s_ + lane * c
    heading = ang + (math.pi if lane > 0 else 0.0)
    return x, y, heading


# --------------------------------------------------------------------------------------------
# region / relation predicates (fractions of the frame, on mask centroids)
# --------------------------------------------------------------------------------------------


def _region_in(region: str, fx: float, fy: float) -> bool:
    if region == "center":
        return abs(fx - 0.5) < 0.15 and abs(fy - 0.5) < 0.15
    ok = True
    if "left" in region:
        ok &= fx < (0.40 if region == "left" else 0.45)
    if "right" in region:
        ok &= fx > (0.60 if region == "right" else 0.55)
    if region in ("top",) or "upper" in region:
        ok &= fy < (0.40 if region == "top" else 0.45)
    if region in ("bottom",) or "lower" in region:
        ok &= fy > (0.60 if region == "bottom" else 0.55)
    return bool(ok)


def _region_out(region: str, fx: float, fy: float) -> bool:
    """Clearly NOT in ``region`` (a margin between in and out keeps the words unambiguous)."""
    if region == "center":
        return max(abs(fx - 0.5), abs(fy - 0.5)) > 0.3
    if region == "left":
        return fx > 0.55
    if region == "right":
        return fx < 0.45
    if region == "top":
        return fy > 0.55
    if region == "bottom":
        return fy < 0.45
    out = False
    out |= ("left" in region and fx > 0.55) or ("right" in region and fx < 0.45)
    out |= ("upper" in region and fy > 0.55) or ("lower" in region and fy < 0.45)
    return bool(out)


def _region_box(region: str) -> tuple[float, float, float, float]:
    """Sampling box (fx0, fx1, fy0, fy1) for centres inside ``region``."""
    fx0, fx1, fy0, fy1 = 0.05, 0.95, 0.05, 0.95
    if region == "center":
        return 0.38, 0.62, 0.38, 0.62
    if "left" in region:
        fx1 = 0.38 if region == "left" else 0.43
    if "right" in region:
        fx0 = 0.62 if region == "right" else 0.57
    if region == "top" or "upper" in region:
        fy1 = 0.38 if region == "top" else 0.43
    if region == "bottom" or "lower" in region:
        fy0 = 0.62 if region == "bottom" else 0.57
    return fx0, fx1, fy0, fy1


def _gap(a: _Obj, b: _Obj) -> float:
    """Chebyshev gap between bounding boxes (0 when they overlap)."""
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return float(max(ax0 - bx1, bx0 - ax1, ay0 - by1, by0 - ay1, 0))


def _relation_holds(rel: str, o: _Obj, anchor: _Obj, s: float) -> bool:
    ox0, oy0, ox1, oy1 = o.bbox
    ax0, ay0, ax1, ay1 = anchor.bbox
    if rel == "left":
        return ox1 <= ax0 and oy1 > ay0 - 20 * s and oy0 < ay1 + 20 * s
    if rel == "right":
        return ox0 >= ax1 and oy1 > ay0 - 20 * s and oy0 < ay1 + 20 * s
    if rel == "above":
        return oy1 <= ay0 and ox1 > ax0 - 20 * s and ox0 < ax1 + 20 * s
    if rel == "below":
        return oy0 >= ay1 and ox1 > ax0 - 20 * s and ox0 < ax1 + 20 * s
    if rel == "near":
        return _gap(o, anchor) <= 10 * s
    if rel == "on":
        return bool(anchor_mask_cache(anchor, o)[o.m].mean() > 0.9)
    raise ValueError(rel)


def _relation_clearly_not(rel: str, o: _Obj, anchor: _Obj, s: float) -> bool:
    """Distractor placement rule: clearly on the other side / far / off the road."""
    ox0, oy0, ox1, oy1 = o.bbox
    ax0, ay0, ax1, ay1 = anchor.bbox
    if rel == "left":
        return ox0 >= ax1 + 4 * s
    if rel == "right":
        return ox1 <= ax0 - 4 * s
    if rel == "above":
        return oy0 >= ay1 + 4 * s
    if rel == "below":
        return oy1 <= ay0 - 4 * s
    if rel == "near":
        return _gap(o, anchor) >= 36 * s
    if rel == "on":
        return not anchor_mask_cache(anchor, o)[o.m].any()
    raise ValueError(rel)


def anchor_mask_cache(anchor: _Obj, o: _Obj) -> np.ndarray:
    """The anchor's footprint cut to ``o``'s window (zeros outside the anchor window)."""
    h, w = o.m.shape
    out = np.zeros((h, w), bool)
    ah, aw = anchor.m.shape
    y0, x0 = max(o.y0, anchor.y0), max(o.x0, anchor.x0)
    y1, x1 = min(o.y0 + h, anchor.y0 + ah), min(o.x0 + w, anchor.x0 + aw)
    if y1 > y0 and x1 > x0:
        out[y0 - o.y0:y1 - o.y0, x0 - o.x0:x1 - o.x0] = anchor.m[y0 - anchor.y0:y1 - anchor.y0,
                                                               x0 - anchor.x0:x1 - anchor.x0]
    return out


# --------------------------------------------------------------------------------------------
# placement
# --------------------------------------------------------------------------------------------


def _place(cv: _Canvas, rng: np.random.Generator, cat: str, *, tries: int = 40,
           box: tuple[float, float, float, float] | None = None,
           check: Callable[[_Obj], bool] | None = None, inside: bool = True,
           road: _Obj | None = None, **kw: Any) -> _Obj | None:
    """Sample positions until ``cat`` fits (free, inside, ``check``) then add it to the canvas.

    ``box`` = (fx0, fx1, fy0, fy1) bounds the sampled centre in frame fractions; vehicles
    given a ``road`` are put on one of its lanes, heading along it.
    """
    fx0, fx1, fy0, fy1 = box or (0.04, 0.96, 0.04, 0.96)
    for _ in range(tries):
        if road is None or cat not in VEHICLES:
            cx = float(rng.uniform(fx0, fx1) * cv.w)
            cy = float(rng.uniform(fy0, fy1) * cv.h)
            # cheap early reject: centre already taken
            iy, ix = min(int(cy), cv.h - 1), min(int(cx), cv.w - 1)
            if cv.solid[iy, ix] or cv.flat[iy, ix] or (cat not in VEHICLES and
                                                       cv.roadocc[iy, ix]):
                continue
            o = make_object(cv, rng, cat, cx, cy, **kw)
        else:
            cx, cy, heading = _on_road_point(rng, cv, road)
            if not (fx0 * cv.w <= cx <= fx1 * cv.w and fy0 * cv.h <= cy <= fy1 * cv.h):
                continue
            o = make_object(cv, rng, cat, cx, cy, ang=heading, **kw)
        if o is None or not cv.fits(o, inside=inside):
            continue
        if check is not None and not check(o):
            continue
        return cv.add(o)
    return None


def _frac(cv: _Canvas, o: _Obj) -> tuple[float, float]:
    x, y = o.centroid
    return x / cv.w, y / cv.h


# --------------------------------------------------------------------------------------------
# scenarios: referent + same-category distractors (+ anchor) satisfying the sentence's rule
# --------------------------------------------------------------------------------------------


@dataclass
class _Scenario:
    type: str
    category: str
    referent: _Obj
    distractors: list[_Obj]
    anchor: _Obj | None = None
    details: dict[str, Any] = field(default_factory=dict)


class _Retry(Exception):
    """The scenario could not be placed; try again with fresh random draws."""


def _fits_chip(cat: str, cv: _Canvas) -> bool:
    return OBJECT_HALF_EXTENT[cat] * cv.scale * 2.2 <= min(cv.w, cv.h)


def _choose(rng: np.random.Generator, weights: dict[str, float], allowed: Iterable[str]) -> str:
    allowed = [c for c in allowed if c in weights]
    if not allowed:
        raise _Retry
    p = np.array([weights[c] for c in allowed], float)
    return str(allowed[int(rng.choice(len(allowed), p=p / p.sum()))])


def _n_distractors(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))


def _veh_road(cv: _Canvas, rng: np.random.Generator, cat: str) -> _Obj | None:
    """Vehicles go on the road most of the time when there is one."""
    if cat in VEHICLES and cv.roads and rng.random() < 0.7:
        return cv.roads[int(rng.integers(len(cv.roads)))]
    return None


def _scn_category(cv, rng, cat) -> _Scenario:
    if cat == "road":
        if not cv.roads:
            cv.add(_make_road(cv, rng))
        return _Scenario("category", "road", cv.roads[0], [])
    o = _place(cv, rng, cat, road=_veh_road(cv, rng, cat))
    if o is None:
        raise _Retry
    return _Scenario("category", cat, o, [])


def _scn_colour(cv, rng, cat, with_size: bool = False, colour: str | None = None) -> _Scenario:
    palette = PALETTES[cat]
    colour = colour or str(rng.choice(palette))
    others = [c for c in palette if c != colour]
    det: dict[str, Any] = {"attribute": "colour", "colour": colour}
    if with_size:
        size = str(rng.choice(["small", "large"]))
        opp = "large" if size == "small" else "small"
        ref = _place(cv, rng, cat, colour=colour, size_class=size)
        if ref is None:
            raise _Retry
        # A: same colour other size; B: other colour same size -> both words are needed
        a = _place(cv, rng, cat, colour=colour, size_class=opp)
        b = _place(cv, rng, cat, colour=str(rng.choice(others)), size_class=size)
        ds = [d for d in (a, b) if d is not None]
        if not ds or not _size_ok(ref, [d for d in ds if d.colour == colour], size):
            raise _Retry
        det.update(attribute="colour+size", size=size)
        return _Scenario("attribute", cat, ref, ds, details=det)
    ref = _place(cv, rng, cat, colour=colour, road=_veh_road(cv, rng, cat))
    if ref is None:
        raise _Retry
    ds = []
    for _ in range(_n_distractors(rng)):
        d = _place(cv, rng, cat, colour=str(rng.choice(others)), road=_veh_road(cv, rng, cat))
        if d is not None:
            ds.append(d)
    if not ds:
        raise _Retry
    return _Scenario("attribute", cat, ref, ds, details=det)


def _size_ok(ref: _Obj, others: list[_Obj], size: str) -> bool:
    for d in others:
        if size in ("large", "largest") and ref.area < 1.8 * d.area:
            return False
        if size in ("small", "smallest") and 1.8 * ref.area > d.area:
            return False
    return True


def _scn_size(cv, rng, cat, size: str | None = None, superlative: bool = False) -> _Scenario:
    size = size or str(rng.choice(["large", "small"]))
    ref = _place(cv, rng, cat, size_class=size)
    if ref is None:
        raise _Retry
    ds = []
    other_classes = ["small", "medium"] if size == "large" else ["medium", "large"]
    for _ in range(_n_distractors(rng)):
        d = _place(cv, rng, cat, size_class=str(rng.choice(other_classes)),
                   check=lambda o: _size_ok(ref, [o], size))
        if d is not None:
            ds.append(d)
    if not ds:
        raise _Retry
    word = size if len(ds) == 1 and not superlative else (
        "largest" if size == "large" else "smallest")
    return _Scenario("attribute", cat, ref, ds,
                     details={"attribute": "size", "size": word, "count": len(ds) + 1})


def _scn_absolute(cv, rng, cat, region: str | None = None) -> _Scenario:
    region = region or str(rng.choice(REGIONS))
    road = _veh_road(cv, rng, cat)

    def in_region(o: _Obj) -> bool:
        return _region_in(region, *_frac(cv, o))

    def out_region(o: _Obj) -> bool:
        return _region_out(region, *_frac(cv, o))

    ref = _place(cv, rng, cat, box=_region_box(region), check=in_region, road=road, tries=60)
    if ref is None:
        raise _Retry
    ds = []
    for _ in range(_n_distractors(rng)):
        d = _place(cv, rng, cat, check=out_region, road=_veh_road(cv, rng, cat))
        if d is not None:
            ds.append(d)
    if not ds:
        raise _Retry
    return _Scenario("spatial-absolute", cat, ref, ds, details={"region": region})


def _near_box(cv: _Canvas, anchor: _Obj, rel: str, reach: float) -> tuple[float, ...]:
    """Sampling box (frame fractions) for a referent standing ``rel`` of ``anchor``."""
    ax0, ay0, ax1, ay1 = anchor.bbox
    x0, x1, y0, y1 = ax0 - reach, ax1 + reach, ay0 - reach, ay1 + reach
    if rel == "left":
        x1 = ax0
    elif rel == "right":
        x0 = ax1
    elif rel == "above":
        y1 = ay0
    elif rel == "below":
        y0 = ay1
    return (max(0.0, x0 / cv.w), min(1.0, x1 / cv.w), max(0.0, y0 / cv.h), min(1.0, y1 / cv.h))


def _scn_relative(cv, rng, cat, anchors: list[str] | None = None,
                  rels: list[str] | None = None) -> _Scenario:
    if anchors is None:
        anchors = [a for a in RELATION_ANCHORS.get(cat, []) if a == "road" or _fits_chip(a, cv)]
    if not anchors:
        raise _Retry
    acat = str(rng.choice(anchors))
    s = cv.scale
    if acat == "road":
        if not cv.roads:
            cv.add(_make_road(cv, rng))
        anchor, rel = cv.roads[0], "on"
    else:
        rel = str(rng.choice(rels or ["left", "right", "above", "below", "near"]))
        # anchor roughly central (relative sides need room on both sides)
        box = {"left": (0.45, 0.6, 0.25, 0.75), "right": (0.4, 0.55, 0.25, 0.75),
               "above": (0.25, 0.75, 0.45, 0.6), "below": (0.25, 0.75, 0.4, 0.55),
               "near": (0.2, 0.8, 0.2, 0.8)}[rel]
        anchor = _place(cv, rng, acat, box=box, tries=60)
        if anchor is None:
            raise _Retry
    road = cv.roads[0] if (rel == "on" or (cat in VEHICLES and cv.roads and rng.random() < 0.5)) \
        else None
    reach = (OBJECT_HALF_EXTENT[cat] * 1.5 + (10 if rel == "near" else 20)) * s
    ref = _place(cv, rng, cat, check=lambda o: _relation_holds(rel, o, anchor, s),
                 box=None if rel == "on" else _near_box(cv, anchor, rel, reach),
                 road=road, tries=120)
    if ref is None:
        raise _Retry
    ds = []
    for _ in range(_n_distractors(rng)):
        d = _place(cv, rng, cat, check=lambda o: _relation_clearly_not(rel, o, anchor, s),
                   road=None if rel == "on" else _veh_road(cv, rng, cat), tries=60)
        if d is not None:
            ds.append(d)
    if not ds:
        raise _Retry
    return _Scenario("spatial-relative", cat, ref, ds, anchor=anchor,
                     details={"relation": rel, "anchor": acat})


def _scn_combined(cv, rng, cat) -> _Scenario:
    use_size = cat not in PALETTES or (cat in SIZE_RANGES and rng.random() < 0.35)
    region = str(rng.choice(["left", "right", "top", "bottom"] if
                            OBJECT_HALF_EXTENT[cat] > 25 else REGIONS[:8]))
    road = _veh_road(cv, rng, cat)

    def fr(o: _Obj) -> tuple[float, float]:
        return _frac(cv, o)

    if use_size:
        size = str(rng.choice(["large", "small"]))
        opp = "small" if size == "large" else "large"
        ref = _place(cv, rng, cat, size_class=size, box=_region_box(region),
                     check=lambda o: _region_in(region, *fr(o)), tries=60)
        if ref is None:
            raise _Retry
        a = _place(cv, rng, cat, size_class=size, check=lambda o: _region_out(region, *fr(o)))
        b = _place(cv, rng, cat, size_class=opp, box=_region_box(region),
                   check=lambda o: _region_in(region, *fr(o)) and _size_ok(ref, [o], size))
        ds = [d for d in (a, b) if d is not None]
        if not ds:
            raise _Retry
        return _Scenario("combined", cat, ref, ds,
                         details={"attribute": "size", "size": size, "region": region})
    colour = str(rng.choice(PALETTES[cat]))
    others = [c for c in PALETTES[cat] if c != colour]
    ref = _place(cv, rng, cat, colour=colour, box=_region_box(region), road=road,
                 check=lambda o: _region_in(region, *fr(o)), tries=60)
    if ref is None:
        raise _Retry
    # A: same colour elsewhere; B: other colour in the same region -> both words are needed
    a = _place(cv, rng, cat, colour=colour, check=lambda o: _region_out(region, *fr(o)),
               road=_veh_road(cv, rng, cat))
    b = _place(cv, rng, cat, colour=str(rng.choice(others)), box=_region_box(region),
               check=lambda o: _region_in(region, *fr(o)), road=_veh_road(cv, rng, cat))
    ds = [d for d in (a, b) if d is not None]
    if not ds:
        raise _Retry
    return _Scenario("combined", cat, ref, ds,
                     details={"attribute": "colour", "colour": colour, "region": region})


def _build_scenario(cv: _Canvas, rng: np.random.Generator, etype: str,
                    forbid: frozenset[str] = frozenset()) -> _Scenario:
    """Referent + distractors for one expression type; ``forbid``: categories not to use."""
    fits = [c for c in CATEGORIES if (c == "road" or _fits_chip(c, cv)) and c not in forbid]
    if etype == "category":
        cat = _choose(rng, REFERENT_WEIGHTS, fits)
        return _scn_category(cv, rng, cat)
    if etype == "attribute":
        mode = str(rng.choice(["colour", "size", "colour+size"], p=[0.5, 0.3, 0.2]))
        if mode == "colour":
            return _scn_colour(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                                [c for c in fits if c in PALETTES]))
        if mode == "size":
            return _scn_size(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                              [c for c in fits if c in SIZE_RANGES]))
        return _scn_colour(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                            [c for c in fits if c in ("building",
                                                                      "storage tank")]),
                           with_size=True)
    if etype == "spatial-absolute":
        return _scn_absolute(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                              [c for c in fits if c != "road"]))
    if etype == "spatial-relative":
        cat = _choose(rng, REFERENT_WEIGHTS, [c for c in fits if c in RELATION_ANCHORS])
        anchors = [a for a in RELATION_ANCHORS[cat] if a in fits]
        return _scn_relative(cv, rng, cat, anchors=anchors)
    if etype == "combined":
        return _scn_combined(cv, rng, _choose(
            rng, REFERENT_WEIGHTS, [c for c in fits if c in PALETTES or
                                    c in ("building", "storage tank", "tree")]))
    raise ValueError(etype)


def _add_clutter(cv: _Canvas, rng: np.random.Generator, protected: set[str], n: int) -> None:
    """Other-category objects (never of a protected category: the referent's or anchor's)."""
    allowed = [c for c in CLUTTER_WEIGHTS if c not in protected and _fits_chip(c, cv)]
    if not allowed:
        return
    for _ in range(n):
        cat = _choose(rng, CLUTTER_WEIGHTS, allowed)
        k = int(rng.integers(1, 4)) if cat == "tree" else 1
        for _ in range(k):
            _place(cv, rng, cat, tries=8, inside=False, road=_veh_road(cv, rng, cat),
                   size_class=str(rng.choice(["small", "medium"])) if cat in SIZE_RANGES
                   else "medium")


# --------------------------------------------------------------------------------------------
# expressions
# --------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _noun(rng: np.random.Generator, cat: str, cv: _Canvas | None = None) -> str:
    words = CATEGORY_WORDS[cat]
    if cat == "car" and cv is not None and not any(o.category in ("truck", "bus")
                                                   for o in cv.objects):
        words = ["car", "car", "vehicle"]  # only cars: "vehicle" is unambiguous
    return _pick(rng, words)


def _colour_word(rng: np.random.Generator, colour: str) -> str:
    return _pick(rng, COLOUR_WORDS[colour])


def _size_word(rng: np.random.Generator, size: str, pair: bool = False) -> str:
    """``pair``: exactly two objects of the category, so comparatives are fine too."""
    return _pick(rng, {"large": ["large", "big"] + (["bigger", "larger"] if pair else []),
                       "small": ["small", "little"] + (["smaller"] if pair else []),
                       "largest": ["largest", "biggest"],
                       "smallest": ["smallest"]}[size])


def _expression(rng: np.random.Generator, sc: _Scenario, cv: _Canvas, scene: bool = False) -> str:
    cat, det = sc.category, sc.details
    noun = _noun(rng, cat, cv if sc.type == "category" else None)
    regions = SCENE_REGION_PHRASES if scene else REGION_PHRASES
    if sc.type == "category":
        forms = ["the {n}", "the {n}", "the only {n}", "the {n} in the image"]
        if scene:
            forms = ["the {n}", "the only {n}", "the {n} in the scene"]
        return _pick(rng, forms).format(n=noun)
    if sc.type == "attribute":
        if det["attribute"] == "colour":
            c = _colour_word(rng, det["colour"])
            forms = ["the {c} {n}", "the {c} {n}", "the {n} that is {c}", "{c} {n}"]
            if cat == "building":
                forms += ["the building with the {c} roof", "the {c} roofed building"]
            return _pick(rng, forms).format(c=c, n=noun)
        if det["attribute"] == "size":
            z = _size_word(rng, det["size"], pair=det.get("count") == 2)
            forms = ["the {z} {n}", "the {z} {n}"]
            if det["size"] in ("largest", "smallest"):
                forms.append("the {n} that is the {z}")
            return _pick(rng, forms).format(z=z, n=noun)
        z = _size_word(rng, det["size"])
        c = _colour_word(rng, det["colour"])
        return _pick(rng, ["the {z} {c} {n}", "the {z} {c} {n}", "the {c} {n} that is {z}"]
                     ).format(z=z, c=c, n=noun)
    if sc.type == "spatial-absolute":
        r = _pick(rng, regions[det["region"]])
        forms = ["the {n} {r}", "the {n} {r}", "the {n} located {r}"]
        return _pick(rng, forms).format(n=noun, r=r)
    if sc.type == "spatial-relative":
        rel = _pick(rng, RELATION_PHRASES[det["relation"]])
        a = _pick(rng, CATEGORY_WORDS[det["anchor"]])
        if det["relation"] == "on":
            return _pick(rng, ["the {n} on the road", "the {n} driving on the road"]).format(n=noun)
        forms = ["the {n} {rel} the {a}", "the {n} {rel} the {a}", "the {n} that is {rel} the {a}"]
        return _pick(rng, forms).format(n=noun, rel=rel, a=a)
    if sc.type == "combined":
        r = _pick(rng, regions[det["region"]])
        if det["attribute"] == "colour":
            w = _colour_word(rng, det["colour"])
        else:
            w = _size_word(rng, det["size"])
        return _pick(rng, ["the {w} {n} {r}", "the {w} {n} {r}", "the {w} {n} located {r}"]
                     ).format(w=w, n=noun, r=r)
    raise ValueError(sc.type)


# --------------------------------------------------------------------------------------------
# absent (negative) chips: the sentence names something the chip does not contain
# --------------------------------------------------------------------------------------------


def _visible_frac(label: np.ndarray, o: _Obj) -> list[tuple[float, float]]:
    """Footprint centroid and (if any pixel shows) visible-pixel centroid, in frame fractions."""
    h, w = label.shape
    x, y = o.centroid
    out = [(x / w, y / h)]
    ys, xs = np.nonzero(label == o.id)
    if ys.size:
        out.append(((float(xs.mean()) + 0.5) / w, (float(ys.mean()) + 0.5) / h))
    return out


def _absent_category(rng: np.random.Generator, cv: _Canvas, visible: list[_Obj]
                     ) -> tuple[str, str, dict[str, Any]]:
    """(a) a category with no object in the chip, phrased like a positive sentence would be."""
    present = {o.category for o in cv.objects}
    drawable = [c for c in CATEGORIES if c not in present]
    # a drawable category is the harder (and, for tile-wise inference, the usual) negative
    if drawable and rng.random() < 0.7:
        cat, pool = _pick(rng, drawable), "drawable"
    else:
        cat, pool = _pick(rng, ABSENT_ONLY_WORDS), "never-drawn"
    # "vehicle" only when no vehicle at all is present (it would name a truck or a bus)
    noun = _noun(rng, cat, cv) if cat in CATEGORY_WORDS else cat
    det: dict[str, Any] = {"pool": pool}
    anchors = sorted({o.category for o in visible if o.category in CATEGORY_WORDS})
    forms = ["plain", "plain", "region"]
    if cat in PALETTES:
        forms.append("colour")
    if cat in SIZE_RANGES:
        forms.append("size")
    if anchors:
        forms.append("relation")
    form = _pick(rng, forms)
    if form == "colour":
        det["colour"] = str(rng.choice(PALETTES[cat]))
        text = _pick(rng, ["the {c} {n}", "the {n} that is {c}"]).format(
            c=_colour_word(rng, det["colour"]), n=noun)
    elif form == "size":
        det["size"] = str(rng.choice(["large", "small"]))
        text = f"the {_size_word(rng, det['size'])} {noun}"
    elif form == "region":
        det["region"] = str(rng.choice(REGIONS))
        text = f"the {noun} {_pick(rng, REGION_PHRASES[det['region']])}"
    elif form == "relation":
        det["anchor"] = _pick(rng, anchors)
        det["relation"] = str(rng.choice(["left", "right", "above", "below", "near"]))
        text = "the {n} {rel} the {a}".format(
            n=noun, rel=_pick(rng, RELATION_PHRASES[det["relation"]]),
            a=_pick(rng, CATEGORY_WORDS[det["anchor"]]))
    else:
        text = _pick(rng, ["the {n}", "the {n}", "the only {n}", "the {n} in the image"]
                     ).format(n=noun)
    return cat, text, det


def _absent_attribute(rng: np.random.Generator, cv: _Canvas, visible: list[_Obj]
                      ) -> tuple[str, str, dict[str, Any]] | None:
    """(b) a present category with a colour that none of its objects has (None: impossible)."""
    cands: list[tuple[str, str]] = []
    for cat in sorted({o.category for o in visible if o.category in PALETTES}):
        # every object of the category counts, hidden ones too (conservative)
        have = {o.colour for o in cv.objects if o.category == cat}
        cands += [(cat, c) for c in PALETTES[cat] if c not in have]
    if not cands:
        return None
    cat, colour = cands[int(rng.integers(len(cands)))]
    noun = _noun(rng, cat, cv)
    forms = ["the {c} {n}", "the {c} {n}", "the {n} that is {c}", "{c} {n}"]
    if cat == "building":
        forms += ["the building with the {c} roof", "the {c} roofed building"]
    text = _pick(rng, forms).format(c=_colour_word(rng, colour), n=noun)
    present = sorted({str(o.colour) for o in cv.objects if o.category == cat})
    return cat, text, {"colour": colour, "present_colours": present}


def _absent_spatial(rng: np.random.Generator, cv: _Canvas, label: np.ndarray,
                    visible: list[_Obj]) -> tuple[str, str, dict[str, Any]] | None:
    """(c) a present category in a region that every one of its objects is clearly out of."""
    cands: list[tuple[str, str]] = []
    for cat in sorted({o.category for o in visible if o.category != "road"}):
        objs = [o for o in cv.objects if o.category == cat]
        fracs = [f for o in objs for f in _visible_frac(label, o)]
        cands += [(cat, r) for r in REGIONS if all(_region_out(r, fx, fy) for fx, fy in fracs)]
    if not cands:
        return None
    cat, region = cands[int(rng.integers(len(cands)))]
    noun = _noun(rng, cat, cv)
    text = _pick(rng, ["the {n} {r}", "the {n} {r}", "the {n} located {r}"]).format(
        n=noun, r=_pick(rng, REGION_PHRASES[region]))
    return cat, text, {"region": region}


def _absent_chip(rng: np.random.Generator, cv: _Canvas, img: np.ndarray, label: np.ndarray,
                 seed: int, base: str) -> Chip | None:
    """A negative chip on an already rendered scene: empty mask, sentence of kind a/b/c.

    Kinds (``details["absent_kind"]``, letter in ``details["kind"]``): ``category`` (a) names
    a category with no object here (a drawable one or one of :data:`ABSENT_ONLY_WORDS`);
    ``attribute`` (b) a present category with a palette colour none of its objects has;
    ``spatial`` (c) a present category with a region every object of it is clearly out of
    (:func:`_region_out` on footprint and visible centroids). b/c fall back to a when the
    chip offers no such sentence. ``base`` is the scenario type the scene was built with.
    """
    ids = {int(i) for i in np.unique(label) if i}
    visible = [o for o in cv.objects if o.id in ids]
    kinds = list(ABSENT_KIND_WEIGHTS)
    p = np.array([ABSENT_KIND_WEIGHTS[k] for k in kinds])
    kind = str(kinds[int(rng.choice(len(kinds), p=p / p.sum()))])
    res: tuple[str, str, dict[str, Any]] | None = None
    if kind == "attribute":
        res = _absent_attribute(rng, cv, visible)
    elif kind == "spatial":
        res = _absent_spatial(rng, cv, label, visible)
    if res is None:
        kind = "category"
        res = _absent_category(rng, cv, visible)
    cat, text, det = res
    union = np.isin(label, [o.id for o in cv.objects if o.category == cat])
    if kind != "category" and not union.any():
        return None  # cannot happen (b/c use visible categories); keep the contract anyway
    details = {"absent_kind": kind, "kind": ABSENT_KIND_LETTER[kind], "base_type": base, **det}
    return Chip(image=img, mask=np.zeros(label.shape, bool), expression=text, category=cat,
                type=ABSENT_TYPE, needs_disambiguation=False, category_union_mask=union,
                seed=seed, details=details)


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise (≈ N(0, 0.5)) with feature size ``cell`` px, float32 [h, w].

    Separable smoothstep interpolation of a coarse random grid: rows first (small), then
    columns. Plain gathers, no BLAS (threaded BLAS stalls on a busy 2-core machine).
    """
    cell = max(cell, 1.0)
    oy, ox = rng.uniform(0, 1, size=2)
    g = rng.standard_normal((int(h / cell) + 3, int(w / cell) + 3), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / cell + np.float32(oy)
    x = np.arange(w, dtype=np.float32) / cell + np.float32(ox)
    iy, ix = y.astype(np.int64), x.astype(np.int64)
    fy, fx = y - iy, x - ix
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    rows = g[iy] * (1 - fy)[:, None] + g[iy + 1] * fy[:, None]
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * _value_noise(rng, h, w, cell)
        total += amp
        amp *= 0.5
        cell /= 2
    return out / total


GROUND = {
    "grass": (92, 122, 64),
    "dry grass": (138, 138, 86),
    "soil": (150, 126, 96),
    "pavement": (152, 152, 148),
}


_BANK_SIZE = 768
_BANK: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def _noise_bank(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) land-cover and grain noise fields that chips crop from: ~20× faster than
    fresh noise per chip, still deterministic, and varied by random offsets and flips."""
    if scale not in _BANK:
        rng = np.random.default_rng(0xB0A7)
        n = _BANK_SIZE
        mix = _fbm(rng, n, n, 70 * scale, 2)
        grain = _fbm(rng, n, n, 6 * scale, 2) * 14 + rng.standard_normal((n, n), np.float32) * 5
        _BANK[scale] = (mix, grain)
    return _BANK[scale]


def _crop(rng: np.random.Generator, field_: np.ndarray, h: int, w: int) -> np.ndarray:
    y = int(rng.integers(0, field_.shape[0] - h + 1))
    x = int(rng.integers(0, field_.shape[1] - w + 1))
    out = field_[y:y + h, x:x + w]
    if rng.random() < 0.5:
        out = out[::-1]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def _ground(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Textured ground: two land covers blended by a low-frequency field, plus fine grain."""
    kinds = list(GROUND)
    a, b = rng.choice(len(kinds), size=2, replace=False)
    ca = np.array(GROUND[kinds[a]], np.float32)
    cb = np.array(GROUND[kinds[b]], np.float32)
    if h <= _BANK_SIZE and w <= _BANK_SIZE:
        mix_f, grain_f = _noise_bank(scale)
        mix, grain = _crop(rng, mix_f, h, w), _crop(rng, grain_f, h, w)
    else:
        # large scenes: land cover varies on several scales (computed at 1/4 resolution, the
        # field is smooth), grain tiled from the bank with random shifts (seams are invisible
        # in high-frequency noise)
        hq, wq = -(-h // 4), -(-w // 4)
        mix = _fbm(rng, hq, wq, 250 * scale / 4, 3) * 0.8 + _value_noise(rng, hq, wq,
                                                                          70 * scale / 4) * 0.4
        mix = np.repeat(np.repeat(mix, 4, axis=0), 4, axis=1)[:h, :w]
        grain_f = _noise_bank(scale)[1]
        reps = (-(-h // _BANK_SIZE) + 1, -(-w // _BANK_SIZE) + 1)
        dy, dx = (int(v) for v in rng.integers(0, _BANK_SIZE, size=2))
        grain = np.tile(grain_f, reps)[dy:dy + h, dx:dx + w]
    # in place: whole scenes are 16+ Mpx, temporaries cost more than the arithmetic
    t = mix * np.float32(2.2)
    t += np.float32(rng.uniform(-0.6, 0.6))
    np.clip(t, -1, 1, out=t)
    t *= 0.5
    t += 0.5
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        np.multiply(t, cb[c] - ca[c], out=img[..., c])
        img[..., c] += grain
        img[..., c] += ca[c]
    return img


def _sub(img: np.ndarray, o: _Obj) -> np.ndarray:
    h, w = o.m.shape
    return img[o.y0:o.y0 + h, o.x0:o.x0 + w]


def _grid_local(o: _Obj):
    h, w = o.m.shape
    ys = np.arange(o.y0, o.y0 + h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(o.x0, o.x0 + w, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def _edge(m: np.ndarray, r: int = 1) -> np.ndarray:
    """Pixels of ``m`` within ``r`` px of its border (4-neighbourhood erosion)."""
    inner = m.copy()
    for _ in range(r):
        e = inner.copy()
        e[1:, :] &= inner[:-1, :]
        e[:-1, :] &= inner[1:, :]
        e[:, 1:] &= inner[:, :-1]
        e[:, :-1] &= inner[:, 1:]
        e[0, :] = e[-1, :] = False
        e[:, 0] = e[:, -1] = False
        inner = e
    return m & ~inner


def _render_road(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    ys, xs = _grid_local(o)
    u, v = _local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    tone = rng.uniform(70, 95)
    col = np.full(o.m.shape, tone, np.float32) + rng.standard_normal(o.m.shape).astype(
        np.float32) * 4
    rgb = np.stack([col, col, col * 1.03], -1)
    sub[o.m] = rgb[o.m]
    half = o.p["W"] / 2
    edge_line = o.m & (np.abs(np.abs(v) - (half - 2.5 * s)) < 0.8 * s)
    dash = o.m & (np.abs(v) < 0.8 * s) & (np.mod(u, 24 * s) < 12 * s)
    sub[edge_line | dash] = (222, 222, 214)


def _render_building(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(COLOURS[o.colour], np.float32)
    noise = rng.standard_normal(o.m.shape).astype(np.float32) * 0.035 + 1
    rgb = base * noise[..., None]
    ys, xs = _grid_local(o)
    u, v = _local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    if o.p.get("gable"):
        # two roof planes lit differently + a ridge line
        along_len = o.p["L"] >= o.p["W"]
        across = v if along_len else u
        f = np.where(across > 0, 0.86, 1.08).astype(np.float32)
        f[np.abs(across) < 0.8 * s] = 1.15
        rgb *= f[..., None]
    else:
        for du, dv in o.p.get("vents", []):
            vm = (np.abs(u - du * o.p["L"]) < 2.5 * s) & (np.abs(v - dv * o.p["W"]) < 2.5 * s)
            rgb[vm & o.m] = rgb[vm & o.m] * 0.55 + 80
    edge = _edge(o.m, max(1, int(round(1.5 * s))))
    rgb[edge] *= 0.78
    sub[o.m] = rgb[o.m]


def _render_vehicle(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(COLOURS[o.colour], np.float32)
    ys, xs = _grid_local(o)
    u, v = _local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    L, W = o.p["L"], o.p["W"]
    rgb = np.broadcast_to(base, o.m.shape + (3,)).copy()
    glass = np.array((40, 46, 56), np.float32)
    if o.category == "car":
        rgb[(u > 0.12 * L) & (u < 0.3 * L)] = glass  # windscreen
        rgb[(u < -0.3 * L) & (u > -0.42 * L)] = glass  # rear window
        roof = (u >= -0.3 * L) & (u <= 0.12 * L) & (np.abs(v) < 0.38 * W)
        rgb[roof] = base * 0.92 + 8
    elif o.category == "truck":
        gap = (u > 0.24 * L) & (u < 0.28 * L)
        rgb[gap] = (30, 30, 32)
        cab = u >= 0.28 * L
        rgb[cab] = base * 0.8 + 20
        rgb[cab & (u > 0.4 * L)] = glass
    else:  # bus: roof with AC units
        ac = (np.abs(v) < 0.3 * W) & (((u > -0.1 * L) & (u < 0.05 * L)) |
                                      ((u > -0.35 * L) & (u < -0.25 * L)))
        rgb[ac] = (170, 172, 176)
        rgb[u > 0.44 * L] = glass
    rgb[_edge(o.m)] *= 0.75
    sub[o.m] = rgb[o.m]


def _render_tank(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(TANK_GREY if o.colour == "grey" else COLOURS["white"], np.float32)
    ys, xs = _grid_local(o)
    dx, dy = xs - o.p["cx"], ys - o.p["cy"]
    r = o.p["r"]
    d = np.sqrt(dx * dx + dy * dy) / r
    f = 1 - 0.10 * (dx + dy) / (r * 1.41)  # lit from the north-west
    f = np.where(np.abs(d - 0.62) < 0.03 + 0.6 / r, f * 0.88, f)  # floating-roof seam
    f = np.where(d > 1 - 2.0 * s / r, f * 0.78, f)  # rim
    rgb = base * f[..., None]
    rgb[(d < 0.06)] *= 0.8
    sub[o.m] = rgb[o.m]


def _render_tree(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    tone = o.p.get("tone", 0.0)
    base = np.array((46 + 8 * tone, 86 + 12 * tone, 40 + 4 * tone), np.float32)
    ys, xs = _grid_local(o)
    dx, dy = xs - o.p["cx"], ys - o.p["cy"]
    r = o.p["r"]
    f = 1 - 0.25 * (dx + dy) / (r * 1.41)
    clump = _value_noise(rng, *o.m.shape, 2.5 * s) * 0.16
    f = f * (1 + clump) * (1 + rng.standard_normal(o.m.shape).astype(np.float32) * 0.05)
    rgb = base * f[..., None]
    rgb[_edge(o.m)] *= 0.8
    sub[o.m] = rgb[o.m]


def _render_pond(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array((34, 66, 84), np.float32) + rng.uniform(-6, 6, size=3).astype(np.float32)
    n = _value_noise(rng, *o.m.shape, 12 * s) * 5
    rgb = base + n[..., None]
    shore = _edge(o.m, max(1, int(round(2 * s))))
    rgb[shore] = rgb[shore] * 0.5 + np.array((118, 116, 84), np.float32) * 0.5
    sub[o.m] = rgb[o.m]


def _render_court(img: np.ndarray, o: _Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(COURT_RED if (o.category == "tennis court" and o.colour == "red")
                    else COLOURS[o.colour], np.float32)
    ys, xs = _grid_local(o)
    u, v = _local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    L, W = o.p["L"], o.p["W"]
    rgb = np.broadcast_to(base, o.m.shape + (3,)).copy()
    rgb *= (1 + rng.standard_normal(o.m.shape).astype(np.float32) * 0.02)[..., None]
    au, av = np.abs(u), np.abs(v)
    lw = 0.8 * s
    inset = 5 * s
    hl, hw = L / 2 - inset, W / 2 - inset
    inside = (au <= hl + lw) & (av <= hw + lw)
    rgb[~inside] = base * 0.8  # surround
    lines = np.zeros(o.m.shape, bool)
    lines |= inside & ((np.abs(au - hl) < lw) | (np.abs(av - hw) < lw))
    if o.category == "tennis court":
        lines |= inside & (np.abs(av - hw * 0.75) < lw)
        lines |= (au < hl * 0.54 + lw) & (av < hw * 0.75) & (np.abs(au - hl * 0.54) < lw)
        lines |= (au < hl * 0.54) & (av < lw)
        rgb[inside & (au < 1.0 * s)] = (45, 45, 45)  # net
    else:
        lines |= inside & (au < lw)
        rc = np.sqrt(u * u + v * v)
        lines |= np.abs(rc - 0.11 * L) < lw
        key = (au > hl - 0.19 * L) & (av < 0.12 * W)
        rgb[key & inside] = base * 0.82
        lines |= inside & (au > hl - 0.19 * L) & (np.abs(av - 0.12 * W) < lw)
        du = hl - 0.03 * L - au
        arc = np.sqrt(du * du + v * v)
        lines |= inside & (np.abs(arc - 0.24 * L) < lw) & (du > -0.03 * L)
    rgb[lines] = (236, 236, 232)
    sub[o.m] = rgb[o.m]


_RENDERERS = {
    "building": _render_building, "car": _render_vehicle, "truck": _render_vehicle,
    "bus": _render_vehicle, "storage tank": _render_tank, "tree": _render_tree,
    "pond": _render_pond, "tennis court": _render_court, "basketball court": _render_court,
    "road": _render_road,
}
# drawing order: flat things first, shadows, then vehicles, buildings/tanks, canopies on top
_Z = {"road": 0, "pond": 1, "tennis court": 1, "basketball court": 1, "car": 3, "truck": 3,
      "bus": 3, "building": 4, "storage tank": 4, "tree": 5}


def _render(cv: _Canvas, rng: np.random.Generator, ground: np.ndarray | None = None,
            look: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw every canvas object. Returns (uint8 image [H,W,3], int32 label map of object ids).

    ``look``: a :class:`rrsis_geo.data.synth_look.Look` (realism hooks) or None (plain).
    """
    img = ground if ground is not None else _ground(rng, cv.h, cv.w, cv.scale)
    label = np.zeros((cv.h, cv.w), np.int32)
    sun = float(rng.uniform(0.35, 1.2))  # shadows fall to the south-east
    sdx, sdy, shade = math.cos(sun), math.sin(sun), 0.52
    if look is not None:
        img = look.ground(img)
        sdx, sdy, shade = look.sun(sun)
    objs = sorted(cv.objects, key=lambda o: _Z[o.category])
    for o in objs:
        if _Z[o.category] >= 3:
            break
        _RENDERERS[o.category](img, o, rng, cv.scale)
        if look is not None:
            look.obj(img, o)
        label[o.y0:o.y0 + o.m.shape[0], o.x0:o.x0 + o.m.shape[1]][o.m] = o.id
    for o in objs:  # cast shadows: the footprint swept along the sun direction
        if o.height <= 0:
            continue
        sy0, sx0, sm = _shadow(o, o.height * sdx, o.height * sdy)
        ty0, tx0 = max(0, sy0), max(0, sx0)
        ty1, tx1 = min(cv.h, sy0 + sm.shape[0]), min(cv.w, sx0 + sm.shape[1])
        if ty1 > ty0 and tx1 > tx0:
            img[ty0:ty1, tx0:tx1][sm[ty0 - sy0:ty1 - sy0, tx0 - sx0:tx1 - sx0]] *= shade
    if look is not None:  # off-nadir walls, under the roofs drawn next
        look.facades(img, objs, _shadow, lambda o: TANK_GREY if o.category == "storage tank"
                     and o.colour == "grey" else COLOURS.get(o.colour or "grey"))
    for o in objs:
        if _Z[o.category] < 3:
            continue
        _RENDERERS[o.category](img, o, rng, cv.scale)
        if look is not None:
            look.obj(img, o)
        label[o.y0:o.y0 + o.m.shape[0], o.x0:o.x0 + o.m.shape[1]][o.m] = o.id
    np.clip(img, 1, 255, out=img)  # 0 is reserved for nodata in scenes
    return img.astype(np.uint8), label


def _shadow(o: _Obj, dx: float, dy: float) -> tuple[int, int, np.ndarray]:
    """Footprint of ``o`` swept by (dx, dy) px: (y0, x0, bool window) in canvas coordinates."""
    n = max(1, int(math.ceil(max(abs(dx), abs(dy)))))
    h, w = o.m.shape
    shifts = [(int(round(k * dy / n)), int(round(k * dx / n))) for k in range(1, n + 1)]
    miny, minx = min(0, *(sy for sy, _ in shifts)), min(0, *(sx for _, sx in shifts))
    maxy, maxx = max(0, *(sy for sy, _ in shifts)), max(0, *(sx for _, sx in shifts))
    out = np.zeros((h + maxy - miny, w + maxx - minx), bool)
    for sy, sx in shifts:
        out[sy - miny:sy - miny + h, sx - minx:sx - minx + w] |= o.m
    return o.y0 + miny, o.x0 + minx, out


# --------------------------------------------------------------------------------------------
# chips
# --------------------------------------------------------------------------------------------


def _check_chip_size(size: int) -> None:
    if not MIN_CHIP_SIZE <= size <= MAX_CHIP_SIZE:
        raise UsageError(f"chip size must be between {MIN_CHIP_SIZE} and {MAX_CHIP_SIZE} px, "
                         f"got {size}")


def generate_chip(seed: int, size: int = 192, *, etype: str | None = None,
                  realism: str = "none") -> Chip:
    """Generate one referring chip, deterministic in (seed, size).

    Args:
        seed: any non-negative int.
        size: chip side in px (at :data:`CHIP_GSD` m/px), 128..2048.
        etype: force an expression type (default: drawn with :data:`TYPE_WEIGHTS`), or
            ``"absent"`` for a negative chip (empty mask; never drawn by default).
        realism: ``none`` | ``textures`` | ``sensor`` | ``all`` (:mod:`rrsis_geo.data.synth_look`);
            the layout and sentence do not depend on it, only the pixels.

    Returns:
        A :class:`Chip` with image [size, size, 3] uint8 and masks [size, size] bool.
    """
    return _make_chip(seed, size, etype, realism=realism)[0]


def _make_chip(seed: int, size: int, etype: str | None = None,
               forbid: frozenset[str] = frozenset(), tag: int = 0x5EED, realism: str = "none"
               ) -> tuple[Chip, np.ndarray, list[_Obj]]:
    """:func:`generate_chip` plus its label map and objects; ``forbid`` keeps categories out."""
    from rrsis_geo.data.synth_look import make_look, names_colour

    look = make_look(realism, seed, size, tag)
    _check_chip_size(size)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    if etype is not None and etype not in TYPE_WEIGHTS and etype != ABSENT_TYPE:
        raise UsageError(f"unknown expression type {etype!r}; one of "
                         f"{', '.join([*TYPE_WEIGHTS, ABSENT_TYPE])}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, tag]))
    types = list(TYPE_WEIGHTS)
    probs = np.array([TYPE_WEIGHTS[t] for t in types])
    absent = etype == ABSENT_TYPE
    # an absent chip's scene is built like any other chip's (same scenario, distractors and
    # clutter), only its sentence changes: the model cannot tell negatives by the picture
    want = (None if absent else etype) or str(types[int(rng.choice(len(types),
                                                                   p=probs / probs.sum()))])
    for _attempt in range(50):
        cv = _Canvas(size, size)
        if "road" not in forbid and rng.random() < 0.45:
            cv.add(_make_road(cv, rng))
        try:
            sc = _build_scenario(cv, rng, want, forbid)
        except _Retry:
            continue
        protected = {sc.category} | ({sc.anchor.category} if sc.anchor is not None else set())
        _add_clutter(cv, rng, protected | set(forbid), int(rng.integers(2, 7)))
        if absent:
            img, label = _render(cv, rng, look=look)
            chip = _absent_chip(rng, cv, img, label, seed, want)
            if chip is None:
                continue
            if look is not None:
                chip.image, chip.details["sensor"] = look.finish(
                    chip.image, allow_pan=not names_colour(chip.expression))
            return chip, label, cv.objects
        expression = _expression(rng, sc, cv)
        img, label = _render(cv, rng, look=look)
        mask = label == sc.referent.id
        same = [o.id for o in cv.objects if o.category == sc.category]
        union = np.isin(label, same)
        if not mask.any() or (sc.distractors and union.sum() <= mask.sum()):
            continue  # referent or distractors fully hidden: redraw
        if sc.anchor is not None and not (label == sc.anchor.id).any():
            continue
        details = dict(sc.details)
        details["distractors"] = len(sc.distractors)
        if look is not None:
            img, details["sensor"] = look.finish(img, allow_pan=not names_colour(expression))
        chip = Chip(image=img, mask=mask, expression=expression, category=sc.category,
                    type=sc.type, needs_disambiguation=bool(sc.distractors),
                    category_union_mask=union, seed=seed, details=details)
        return chip, label, cv.objects
    raise RuntimeError(f"could not generate a {want} chip for seed {seed} at size {size}")


# --------------------------------------------------------------------------------------------
# writing: RefSegRS layout
# --------------------------------------------------------------------------------------------

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_CHIPS_PER_CALL = 1 << 20


def _tiff_bytes(arr: np.ndarray, deflate: bool) -> bytes:
    """A baseline little-endian TIFF (one strip, chunky, uint8 RGB or grey) for ``arr``.

    Written by hand because chips are tiny and many: this takes ~0.1 ms where opening a GDAL
    dataset per file costs milliseconds. Readable by GDAL/rasterio, PIL and cv2.
    """
    import struct
    import zlib

    h, w = arr.shape[:2]
    spp = 3 if arr.ndim == 3 else 1
    data = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if deflate:
        data = zlib.compress(data, 1)
    nbytes = len(data)
    if len(data) % 2:  # the IFD must start on a word boundary
        data += b"\0"
    strip_at = 8
    ifd_at = strip_at + len(data)
    n_entries = 10
    extra_at = ifd_at + 2 + 12 * n_entries + 4  # where BitsPerSample [8, 8, 8] goes
    entries = [
        (256, 4, 1, w), (257, 4, 1, h),
        (258, 3, spp, extra_at if spp == 3 else 8),
        (259, 3, 1, 8 if deflate else 1),  # 8 = Adobe deflate
        (262, 3, 1, 2 if spp == 3 else 1),  # RGB / BlackIsZero
        (273, 4, 1, strip_at), (277, 3, 1, spp), (278, 4, 1, h),
        (279, 4, 1, nbytes),
        (284, 3, 1, 1),
    ]
    out = [b"II*\0", struct.pack("<I", ifd_at), data, struct.pack("<H", n_entries)]
    for tag, typ, count, value in entries:
        if typ == 3 and count == 1:
            out.append(struct.pack("<HHIHH", tag, typ, count, value, 0))
        else:
            out.append(struct.pack("<HHII", tag, typ, count, value))
    out.append(struct.pack("<I", 0))
    if spp == 3:
        out.append(struct.pack("<HHH", 8, 8, 8))
    return b"".join(out)


def _write_plain_tif(path: Path, arr: np.ndarray, deflate: bool) -> None:
    """Plain (not georeferenced) TIFF, written atomically. arr: [H,W,3] or [H,W] uint8."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(_tiff_bytes(arr, deflate))
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def chip_seed(seed: int, index: int) -> int:
    """Seed of chip ``index`` of a ``write_chips(seed=seed)`` run (splits never collide)."""
    return seed * MAX_CHIPS_PER_CALL + index


def chip_is_absent(chip_seed_: int, absent_fraction: float) -> bool:
    """Whether the chip of seed ``chip_seed_`` is a negative one in a ``write_chips`` run.

    Decided by its own small generator (not the chip's), so positive chips stay identical for
    any fraction and the choice is reproducible from the recorded seed alone.
    """
    if absent_fraction <= 0:
        return False
    r = np.random.default_rng(np.random.SeedSequence([chip_seed_, 0xAB5E]))
    return bool(r.random() < absent_fraction)


MAX_ABSENT_FRACTION = 0.9


def write_chips(out_dir: str | os.PathLike[str], count: int, size: int = 192, seed: int = 0,
                split: str = "train", progress: Callable[[int], None] | None = None,
                absent_fraction: float = 0.0, realism: str = "none") -> list[dict[str, Any]]:
    """Write ``count`` chips to ``out_dir`` in the RefSegRS layout (+ metadata.jsonl).

    Files: ``images/<id>.tif`` (RGB uint8), ``masks/<id>.tif`` (uint8, 255 = referent),
    ``union_masks/<id>.tif`` (uint8, 255 = every object of the named category),
    ``output_phrase_<split>.txt`` ("<id> <expression>" lines, appended) and ``metadata.jsonl``
    (one JSON object per chip, appended). Ids are ``f"{split}_{seed}_{i:06d}"``; writing the same
    (split, seed) twice into one root is refused, another split or seed is appended.

    Args:
        progress: called with 1 after each chip (e.g. ``tqdm.update``).
        absent_fraction: share (0..0.9) of negative ``absent`` chips (empty mask), each
            chosen by :func:`chip_is_absent`; regenerate one with
            ``generate_chip(rec["seed"], size, etype="absent")``.
        realism: ``none`` | ``textures`` | ``sensor`` | ``all``, see :func:`generate_chip`
            (recorded in each record when not ``none``).

    Returns:
        The metadata records written.
    """
    if not 0.0 <= absent_fraction <= MAX_ABSENT_FRACTION:  # also rejects NaN
        raise UsageError(f"absent fraction must be between 0 and {MAX_ABSENT_FRACTION}, "
                         f"got {absent_fraction}")
    if count < 1 or count >= MAX_CHIPS_PER_CALL:
        raise UsageError(f"count must be between 1 and {MAX_CHIPS_PER_CALL - 1}, got {count}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    from rrsis_geo.data.synth_look import check_realism

    check_realism(realism)
    if not _SPLIT_RE.match(split):
        raise UsageError(f"split name must match [A-Za-z0-9_-]+, got {split!r}")
    _check_chip_size(size)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    for sub in ("images", "masks", "union_masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    meta_path = root / "metadata.jsonl"
    phrase_path = root / f"output_phrase_{split}.txt"
    prefix = f"{split}_{seed}_"
    old_meta = meta_path.read_text(encoding="utf-8") if meta_path.exists() else ""
    if any(json.loads(line)["id"].startswith(prefix) for line in old_meta.splitlines()
           if line.strip()):
        raise UsageError(f"{root} already holds split {split!r} with seed {seed}; "
                         "use another seed or output folder")
    old_phrases = phrase_path.read_text(encoding="utf-8") if phrase_path.exists() else ""
    if old_phrases and not old_phrases.endswith("\n"):
        old_phrases += "\n"
    if old_meta and not old_meta.endswith("\n"):
        old_meta += "\n"
    records: list[dict[str, Any]] = []
    phrases: list[str] = []
    for i in range(count):
        cs = chip_seed(seed, i)
        chip = generate_chip(cs, size, etype=ABSENT_TYPE if chip_is_absent(
            cs, absent_fraction) else None, realism=realism)
        cid = f"{prefix}{i:06d}"
        # images uncompressed (speed; chips barely compress), masks deflated (mostly zeros)
        _write_plain_tif(root / "images" / f"{cid}.tif", chip.image, deflate=False)
        _write_plain_tif(root / "masks" / f"{cid}.tif",
                         chip.mask.astype(np.uint8) * 255, deflate=True)
        _write_plain_tif(root / "union_masks" / f"{cid}.tif",
                         chip.category_union_mask.astype(np.uint8) * 255, deflate=True)
        rec = {
            "id": cid, "split": split, "expression": chip.expression,
            "category": chip.category, "type": chip.type,
            "needs_disambiguation": chip.needs_disambiguation,
            "image": f"images/{cid}.tif", "mask": f"masks/{cid}.tif",
            "union_mask": f"union_masks/{cid}.tif", "seed": cs, "size": size,
            "gsd": CHIP_GSD, "details": chip.details,
        }
        if realism != "none":
            rec["realism"] = realism
        records.append(rec)
        phrases.append(f"{cid} {chip.expression}\n")
        if progress is not None:
            progress(1)
    # index files last, so an interrupted run leaves no lines pointing at missing files
    _atomic_text(phrase_path, old_phrases + "".join(phrases))
    _atomic_text(meta_path, old_meta + "".join(json.dumps(r) + "\n" for r in records))
    return records


# --------------------------------------------------------------------------------------------
# large georeferenced scenes
# --------------------------------------------------------------------------------------------

MAX_SCENE_TARGETS = 6
# (expression kind, categories it may use) for scene-level targets; spatial words refer to the
# whole scene, and every category a target uses is kept out of the clutter so the sentence
# stays unambiguous scene-wide (buildings: see _SceneRules)
# (vehicles are tiny at scene scale: they only appear as "the truck" or "the bus next to the pond")
SCENE_KINDS: list[tuple[str, list[str]]] = [
    ("spatial-absolute", ["storage tank", "tennis court", "basketball court", "pond"]),
    ("colour", ["storage tank", "tennis court", "basketball court", "building"]),
    ("size", ["storage tank", "pond", "building"]),
    ("category", ["tennis court", "basketball court", "pond", "truck", "bus", "storage tank"]),
    ("combined", ["storage tank", "tennis court", "basketball court"]),
    ("spatial-relative", ["truck", "bus", "storage tank"]),
]
SCENE_ANCHORS = ["pond", "tennis court", "basketball court"]
# a building target reserves this roof colour (colour kind) or the largest size (size kind)
SCENE_BUILDING_COLOUR = "blue"


@dataclass
class SceneTarget:
    """One scene-level referring expression.

    ``referent_id`` indexes :attr:`Scene.label` (0 when ``absent``: nothing in the scene fits).
    """

    expression: str
    category: str
    type: str
    needs_disambiguation: bool
    absent: bool
    referent_id: int = 0
    n_same_category: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scene:
    """A generated large scene: image uint8 [H,W,3] (0 = nodata), valid bool [H,W],
    label int32 [H,W] (object ids), targets, and the metres per pixel it was drawn at."""

    image: np.ndarray
    valid: np.ndarray
    label: np.ndarray
    targets: list[SceneTarget]
    gsd: float
    seed: int
    categories: dict[int, str] = field(default_factory=dict)  # object id -> category

    def referent_mask(self, i: int) -> np.ndarray:
        """bool [H,W] of target ``i`` (all False for an absent target)."""
        t = self.targets[i]
        if t.absent:
            return np.zeros(self.label.shape, bool)
        return self.label == t.referent_id


def _margin_profile(rng: np.random.Generator, n: int) -> np.ndarray:
    """Irregular nodata width along one edge, px [n] (always >= 1% of the side)."""
    base = rng.uniform(0.01, 0.03) * n
    wobble = _value_noise(rng, 1, n, n / rng.uniform(3, 8))[0]
    return np.maximum(0.01 * n, base + 0.012 * n * np.abs(wobble) + 0.004 * n * wobble)


def _valid_area(rng: np.random.Generator, n: int, enabled: bool, shrink: float = 0.0
                ) -> np.ndarray:
    """bool [n, n]: inside the irregular nodata margin (``shrink`` px further in)."""
    if not enabled:
        return np.ones((n, n), bool)
    left, right, top, bottom = (_margin_profile(rng, n) + shrink for _ in range(4))
    yy = np.arange(n, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(n, dtype=np.float32)[None, :] + 0.5
    valid = (xx >= left[:, None]) & (xx <= n - right[:, None])
    valid &= (yy >= top[None, :]) & (yy <= n - bottom[None, :])
    corner = int(rng.integers(4))
    cut = rng.uniform(0.1, 0.22) * n + shrink * 1.42
    cx = xx if corner in (0, 3) else n - xx
    cy = yy if corner in (0, 1) else n - yy
    valid &= (cx + cy) >= cut  # one clipped corner, like the edge of an acquisition strip
    return valid


@dataclass
class _SceneRules:
    """Restrictions on clutter imposed by the targets (keeps their sentences unambiguous)."""

    protected: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)  # categories some target already refers to
    building_colours: list[str] = field(default_factory=lambda: list(PALETTES["building"]))
    building_max_area: float = float("inf")


def _scene_target(cv: _Canvas, rng: np.random.Generator, kind: str, cat: str,
                  rules: _SceneRules) -> _Scenario:
    if kind == "spatial-absolute":
        return _scn_absolute(cv, rng, cat)
    if kind == "colour":
        colour = SCENE_BUILDING_COLOUR if cat == "building" else None
        return _scn_colour(cv, rng, cat, colour=colour)
    if kind == "size":
        return _scn_size(cv, rng, cat, size="large" if cat == "building" else None,
                         superlative=True)
    if kind == "category":
        return _scn_category(cv, rng, cat)
    if kind == "combined":
        return _scn_combined(cv, rng, cat)
    if kind == "spatial-relative":
        anchors = [a for a in SCENE_ANCHORS if a not in rules.protected]
        return _scn_relative(cv, rng, cat, anchors=anchors, rels=["near"])
    raise ValueError(kind)


def _scene_roads(cv: _Canvas, rng: np.random.Generator) -> None:
    """A loose grid: ~1 road per 1000 px each way, at least one of each."""
    for horizontal in (True, False):
        k = max(1, int(round(cv.w / (1000 * cv.scale) * rng.uniform(0.7, 1.1))))
        slots = (np.arange(k) + rng.uniform(0.25, 0.75, size=k)) / k
        for f in slots:
            cv.add(_make_road(cv, rng, horizontal=horizontal, pos=float(f) * cv.w))


def _try_add(cv: _Canvas, o: _Obj | None, check: Callable[[_Obj], bool] | None = None) -> bool:
    if o is None or not cv.fits(o) or (check is not None and not check(o)):
        return False
    cv.add(o)
    return True


def _scene_clutter(cv: _Canvas, rng: np.random.Generator, rules: _SceneRules,
                   absent: set[str]) -> None:
    """Fill the scene: buildings along roads and in blocks, tree clumps, cars, free objects."""
    s = cv.scale
    af = cv.w * cv.h / (4096 * 4096 * s * s)  # area in chip-px units, relative to 4096²

    def building_ok(o: _Obj) -> bool:
        return o.area * 1.8 <= rules.building_max_area

    def building(cx: float, cy: float, ang: float | None) -> None:
        size_class = str(rng.choice(["small", "medium"], p=[0.4, 0.6]))
        o = make_object(cv, rng, "building", cx, cy, ang=ang, size_class=size_class,
                        colour=str(rng.choice(rules.building_colours)))
        _try_add(cv, o, building_ok)

    if "building" not in rules.protected:
        for road in cv.roads:  # frontage: buildings lined up along both sides of each road
            ang, w = road.p["ang"], road.p["W"]
            c, sn = math.cos(ang), math.sin(ang)
            t = -0.5 * max(cv.w, cv.h)
            while t < 0.5 * max(cv.w, cv.h):
                t += float(rng.uniform(45, 80) * s)
                side = float(rng.choice([-1.0, 1.0]))
                off = side * (w / 2 + rng.uniform(26, 40) * s)
                cx, cy = road.p["cx"] + t * c - off * sn, road.p["cy"] + t * sn + off * c
                if 0 < cx < cv.w and 0 < cy < cv.h and rng.random() < 0.75:
                    building(cx, cy, ang + float(rng.normal(0, 0.05)))
        for _ in range(int(260 * af)):  # scattered blocks
            building(float(rng.uniform(0, cv.w)), float(rng.uniform(0, cv.h)), None)
    if "tree" not in rules.protected:
        for _ in range(int(220 * af)):  # clumps
            cx, cy = float(rng.uniform(0, cv.w)), float(rng.uniform(0, cv.h))
            for _ in range(int(rng.integers(2, 9))):
                r = rng.uniform(0, 45 * s)
                a = rng.uniform(0, 2 * math.pi)
                o = make_object(cv, rng, "tree", cx + r * math.cos(a), cy + r * math.sin(a),
                                size_class=str(rng.choice(["small", "medium"])))
                _try_add(cv, o)
    if "car" not in rules.protected and cv.roads:
        for _ in range(int(320 * af)):
            road = cv.roads[int(rng.integers(len(cv.roads)))]
            _place(cv, rng, "car", road=road, tries=2)
    free = [c for c in ("storage tank", "tennis court", "basketball court", "pond", "truck",
                        "bus") if c not in rules.protected and c not in absent]
    for cat in free:
        for _ in range(int(rng.integers(1, 4) * max(af, 0.25) + 0.5)):
            _place(cv, rng, cat, tries=10, road=_veh_road(cv, rng, cat))


def _absent_expression(rng: np.random.Generator, cat: str) -> tuple[str, str]:
    noun = _pick(rng, CATEGORY_WORDS.get(cat, [cat]))
    form = int(rng.integers(3))
    if form == 1:
        region = str(rng.choice(REGIONS))
        return f"the {noun} {_pick(rng, SCENE_REGION_PHRASES[region])}", "spatial-absolute"
    if form == 2 and cat in PALETTES:
        return f"the {_colour_word(rng, str(rng.choice(PALETTES[cat])))} {noun}", "attribute"
    return f"the {noun}", "category"


def _check_scene_args(size: int, gsd: float, n_targets: int, n_absent: int) -> None:
    if not MIN_SCENE_SIZE <= size <= 32768:
        raise UsageError(f"scene size must be between {MIN_SCENE_SIZE} and 32768 px, got {size}")
    if not 0.05 <= gsd <= 2.0:
        raise UsageError(f"gsd must be between 0.05 and 2 m/px, got {gsd}")
    if not 1 <= n_targets <= MAX_SCENE_TARGETS:
        raise UsageError(f"targets must be between 1 and {MAX_SCENE_TARGETS}, got {n_targets}")
    if not 0 <= n_absent <= len(ABSENT_ONLY_WORDS):
        raise UsageError(f"absent must be between 0 and {len(ABSENT_ONLY_WORDS)}, got {n_absent}")
    if size * gsd < 400 * CHIP_GSD:  # the targets need ~100 m x 100 m of ground
        raise UsageError(f"a {size} px scene at {gsd} m/px is too small for the targets "
                         f"(needs >= {400 * CHIP_GSD / gsd:.0f} px)")


def generate_scene(seed: int, size: int = 4096, *, gsd: float = CHIP_GSD,
                   nodata_margin: bool = True, n_targets: int = 6, n_absent: int = 2,
                   realism: str = "none") -> Scene:
    """A large scene of the chip vocabulary with scene-level referring targets.

    Every present target has a unique referent in the whole scene; its spatial words refer to
    the whole frame and its same-category distractors lie elsewhere. ``n_absent`` extra targets
    name an object that is not in the scene at all (``absent=True``).

    Args:
        seed: non-negative int; the scene is deterministic in (seed, size, gsd, options).
        size: side in px. gsd: metres per px; objects keep their metric size (0.25 = chips).
        realism: as for :func:`generate_chip` (scenes never turn panchromatic here).
    """
    _check_scene_args(size, gsd, n_targets, n_absent)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x5CE7E]))
    scale = CHIP_GSD / gsd
    mrng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x3A76]))
    valid = _valid_area(mrng, size, nodata_margin)
    mrng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x3A76]))
    inner = _valid_area(mrng, size, nodata_margin, shrink=6 * scale)
    cv = _Canvas(size, size, scale, valid=inner)
    _scene_roads(cv, rng)

    rules = _SceneRules()
    placed: list[_Scenario] = []
    kinds = [SCENE_KINDS[i] for i in rng.permutation(len(SCENE_KINDS))]
    k = 0
    for _ in range(12 * n_targets):
        if len(placed) == n_targets:
            break
        kind, cats = kinds[k % len(kinds)]
        k += 1
        cands = [c for c in cats if c not in rules.protected and c not in rules.used]
        if kind == "spatial-relative" and not [a for a in SCENE_ANCHORS
                                               if a not in rules.protected]:
            continue
        if not cands:
            continue
        cat = str(rng.choice(cands))
        snap = cv.snapshot()
        try:
            sc = _scene_target(cv, rng, kind, cat, rules)
        except _Retry:
            cv.restore(snap)
            continue
        placed.append(sc)
        rules.used.add(sc.category)
        rules.protected.add(sc.category)
        if sc.anchor is not None:
            rules.protected.add(sc.anchor.category)
        if sc.category == "building":
            # clutter buildings stay: other roof colours, or clearly smaller than the target
            rules.protected.discard("building")
            if kind == "colour":
                rules.building_colours = [c for c in PALETTES["building"]
                                          if c != SCENE_BUILDING_COLOUR]
            else:
                rules.building_max_area = float(sc.referent.area)
    if not placed:
        raise RuntimeError(f"could not place any target in scene seed {seed}")

    used = {o.category for o in cv.objects}
    absent_pool = [c for c in ("storage tank", "tennis court", "basketball court", "pond",
                               "truck", "bus") if c not in used and c not in rules.protected]
    absent_pool += ABSENT_ONLY_WORDS
    absent_cats = [str(c) for c in rng.choice(absent_pool, size=n_absent, replace=False)]
    _scene_clutter(cv, rng, rules, set(absent_cats))

    from rrsis_geo.data.synth_look import make_look

    look = make_look(realism, seed, size, scale=scale)
    img, label = _render(cv, rng, look=look)
    if look is not None:
        img, _ = look.finish(img, allow_pan=False)
    img[~valid] = 0
    label[~valid] = 0

    targets: list[SceneTarget] = []
    for sc in placed:
        same = sum(1 for o in cv.objects if o.category == sc.category)
        det = dict(sc.details)
        targets.append(SceneTarget(
            expression=_expression(rng, sc, cv, scene=True), category=sc.category, type=sc.type,
            needs_disambiguation=same > 1, absent=False, referent_id=sc.referent.id,
            n_same_category=same, details=det))
    for cat in absent_cats:
        expr, etype = _absent_expression(rng, cat)
        targets.append(SceneTarget(expression=expr, category=cat, type=etype,
                                   needs_disambiguation=False, absent=True))
    return Scene(image=img, valid=valid, label=label, targets=targets, gsd=gsd, seed=seed,
                 categories={o.id: o.category for o in cv.objects})


def _mask_polygon(mask: np.ndarray, transform: Any) -> Any:
    """Exact polygon(s) of a bool mask's pixels, in the transform's CRS (a MultiPolygon)."""
    from rasterio import features
    from rasterio.windows import Window, transform as win_transform
    from shapely.geometry import MultiPolygon, shape
    from shapely.ops import unary_union

    ys = np.nonzero(mask.any(axis=1))[0]
    xs = np.nonzero(mask.any(axis=0))[0]
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    sub = mask[y0:y1, x0:x1]
    wt = win_transform(Window(x0, y0, x1 - x0, y1 - y0), transform)
    polys = [shape(g) for g, _ in features.shapes(sub.astype(np.uint8), mask=sub, transform=wt)]
    geom = unary_union(polys)
    return geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])


def _scene_origin(seed: int) -> tuple[float, float]:
    """A plausible UTM (north) upper-left corner, deterministic per seed, on a 10 m grid."""
    r = np.random.default_rng(np.random.SeedSequence([seed, 0x0816]))
    return float(300000 + 10 * r.integers(0, 40000)), float(5000000 + 10 * r.integers(0, 40000))


def _write_geotiff(path: Path, img: np.ndarray, transform: Any, crs: Any) -> None:
    import rasterio

    tmp = path.with_name(f".{path.name}.tmp")
    count = img.shape[2]  # 3 (RGB), 4 (RGB + NIR) or 1 (panchromatic)
    profile = {"driver": "GTiff", "width": img.shape[1], "height": img.shape[0], "count": count,
               "dtype": "uint8", "crs": crs, "transform": transform, "nodata": 0,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "interleave": "pixel", "photometric": "RGB" if count == 3 else "MINISBLACK"}
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(img.transpose(2, 0, 1))
            if count != 3:
                dst.descriptions = ("red", "green", "blue", "nir")[:count] if count == 4 \
                    else ("pan",)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def targets_path(out_tif: str | os.PathLike[str]) -> Path:
    """``OUT.tif`` -> ``OUT.tif.targets.gpkg`` (the targets layer beside a scene)."""
    p = Path(out_tif)
    return p.with_name(p.name + ".targets.gpkg")


def objects_path(out_tif: str | os.PathLike[str]) -> Path:
    """``OUT.tif`` -> ``OUT.tif.objects.gpkg`` (every object of a scene, layer ``objects``)."""
    p = Path(out_tif)
    return p.with_name(p.name + ".objects.gpkg")


def _write_objects(path: Path, scene: Scene, transform: Any, crs: Any) -> int:
    """Write every object of ``scene`` as a label layer (``objects``: id, category, area_m2,
    visible outline as a MultiPolygon); returns the number of objects written."""
    import geopandas as gpd
    from rasterio import features
    from rasterio.windows import Window, transform as win_transform
    from scipy import ndimage
    from shapely.geometry import MultiPolygon, shape
    from shapely.ops import unary_union

    rows = []
    for i, sl in enumerate(ndimage.find_objects(scene.label), start=1):
        if sl is None or i not in scene.categories:
            continue
        sub = scene.label[sl] == i
        wt = win_transform(Window(sl[1].start, sl[0].start, sub.shape[1], sub.shape[0]),
                           transform)
        polys = [shape(g) for g, _ in features.shapes(sub.astype(np.uint8), mask=sub,
                                                       transform=wt)]
        geom = unary_union(polys)
        geom = geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])
        rows.append({"object_id": i, "category": scene.categories[i],
                     "area_m2": float(geom.area), "geometry": geom})
    _write_gpkg_atomic(gpd.GeoDataFrame(rows, geometry="geometry", crs=crs), path, "objects")
    return len(rows)


def _write_gpkg_atomic(gdf: Any, path: Path, layer: str) -> None:
    """Write one GeoPackage layer to a hidden temporary file beside ``path``, then rename."""
    tmp = path.with_name(f".{path.stem}.tmp.gpkg")
    if tmp.exists():
        tmp.unlink()
    try:
        gdf.to_file(tmp, layer=layer, driver="GPKG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_targets(path: Path, rows: list[dict[str, Any]], crs: Any) -> None:
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(
        {k: [r[k] for r in rows] for k in ("target_id", "expression", "category", "type",
                                           "needs_disambiguation", "absent", "n_same_category",
                                           "area_m2")},
        geometry=[r["geometry"] for r in rows], crs=crs)
    _write_gpkg_atomic(gdf, path, "targets")


def _crs(epsg: int) -> Any:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_epsg(epsg)
    except CRSError as exc:
        raise UsageError(f"unknown EPSG code {epsg}") from exc
    if not crs.is_projected:
        raise UsageError(f"EPSG:{epsg} is not a projected CRS (metres needed for --gsd)")
    return crs


def write_scene(out_tif: str | os.PathLike[str], size: int = 4096, seed: int = 0, *,
                gsd: float = CHIP_GSD, nodata_margin: bool = True, epsg: int = 32633,
                n_targets: int = 6, n_absent: int = 2,
                progress: Callable[[int], None] | None = None,
                objects: bool = False, realism: str = "none",
                bands: str = "rgb") -> list[dict[str, Any]]:
    """Write a georeferenced scene GeoTIFF and ``<out_tif>.targets.gpkg`` (layer ``targets``).

    With ``objects``, also ``<out_tif>.objects.gpkg`` (layer ``objects``: every object of the
    scene with its ``category``, its visible outline and ``area_m2``), a complete label layer
    for ``rrsis-geo dataset build``. ``bands``: ``rgb``, ``rgbn`` (+ a near-infrared band,
    :func:`rrsis_geo.data.synth_sensor.nir_band`) or ``pan`` (one panchromatic band).

    GeoTIFF: 3-band uint8 RGB, tiled 512, deflate, nodata 0 (irregular margin), CRS ``epsg``
    with ``gsd`` m pixels. Targets layer: ``target_id, expression, category, type,
    needs_disambiguation, absent, n_same_category, area_m2`` and the referent's exact pixel
    outline as a MultiPolygon in the scene CRS (NULL geometry for ``absent`` rows).

    Args:
        progress: called with 1 after generating, writing the raster and writing the targets.

    Returns:
        The target rows (with shapely geometries).
    """
    crs = _crs(epsg)
    out = _check_out(out_tif)
    scene = generate_scene(seed, size, gsd=gsd, nodata_margin=nodata_margin,
                           n_targets=n_targets, n_absent=n_absent, realism=realism)
    if bands != "rgb":
        from rrsis_geo.data.synth_sensor import scene_bands

        scene.image = scene_bands(scene.image, scene.label, scene.categories, scene.valid, bands)
    if progress is not None:
        progress(1)
    rows = _write_scene_files(out, scene, crs, progress)
    if objects:
        from rasterio.transform import from_origin

        _write_objects(objects_path(out), scene,
                       from_origin(*_scene_origin(scene.seed), scene.gsd, scene.gsd), crs)
    return rows


def _check_out(out_tif: str | os.PathLike[str]) -> Path:
    out = Path(out_tif)
    if not out.parent.is_dir():
        raise UsageError(f"output folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; give a .tif path")
    return out


def _write_scene_files(out: Path, scene: Scene, crs: Any,
                       progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    from rasterio.transform import from_origin

    transform = from_origin(*_scene_origin(scene.seed), scene.gsd, scene.gsd)
    _write_geotiff(out, scene.image, transform, crs)
    if progress is not None:
        progress(1)
    rows = []
    for i, t in enumerate(scene.targets):
        geom = None if t.absent else _mask_polygon(scene.referent_mask(i), transform)
        rows.append({"target_id": i, "expression": t.expression, "category": t.category,
                     "type": t.type, "needs_disambiguation": t.needs_disambiguation,
                     "absent": t.absent, "n_same_category": t.n_same_category,
                     "area_m2": 0.0 if geom is None else float(geom.area), "geometry": geom})
    _write_targets(targets_path(out), rows, crs)
    if progress is not None:
        progress(1)
    return rows


def _mosaic_forbid(cat: str) -> frozenset[str]:
    # a car may be called "vehicle": then no truck or bus may appear in the other tiles either
    return frozenset(VEHICLES) if cat == "car" else frozenset({cat})


def generate_mosaic_3x3(seed: int, chip_size: int = 192) -> Scene:
    """A 3×3 grid of chips whose referent sits in exactly one tile.

    The referent tile is a ``category`` chip (its category appears once in that tile); the 8
    other tiles are ordinary chips drawn without that category, so the sentence has exactly
    one referent in the whole mosaic. One extra ``absent`` target names a category that no tile
    contains. ``details["tile"]`` = (row, col) of the referent's tile.
    """
    _check_chip_size(chip_size)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, chip_size, 0x3A3]))
    tile = int(rng.integers(9))
    n = 3 * chip_size
    image = np.zeros((n, n, 3), np.uint8)
    label = np.zeros((n, n), np.int32)
    categories: dict[int, str] = {}
    ref_chip = None
    ref_id = 0
    for k in range(9):
        r, c = divmod(k, 3)
        sub_seed = int(rng.integers(0, 2**62))
        if k == tile:
            chip, lab, objs = _make_chip(sub_seed, chip_size, "category",
                                         forbid=frozenset({"road"}), tag=0x3A4)
            ref_chip = chip
        else:
            assert ref_chip is not None or k < tile
            forbid = _mosaic_forbid(ref_chip.category) if ref_chip is not None else frozenset()
            chip, lab, objs = _make_chip(sub_seed, chip_size, None, forbid=forbid, tag=0x3A5)
        offset = max(categories, default=0)
        sl = (slice(r * chip_size, (r + 1) * chip_size), slice(c * chip_size, (c + 1) * chip_size))
        image[sl] = chip.image
        label[sl] = np.where(lab > 0, lab + offset, 0)
        for o in objs:
            categories[o.id + offset] = o.category
        if k == tile:
            ref_id = int(label[sl][chip.mask][0])
    assert ref_chip is not None
    # tiles drawn before the referent tile were made without knowing its category: redraw any
    # that happen to contain it (deterministic: the seeds continue from the same generator)
    for k in range(tile):
        r, c = divmod(k, 3)
        sl = (slice(r * chip_size, (r + 1) * chip_size), slice(c * chip_size, (c + 1) * chip_size))
        ids = np.unique(label[sl])
        forbid = _mosaic_forbid(ref_chip.category)
        if not any(categories.get(int(i)) in forbid for i in ids if i):
            continue
        chip, lab, objs = _make_chip(int(rng.integers(0, 2**62)), chip_size, None,
                                     forbid=forbid, tag=0x3A5)
        for i in ids:
            categories.pop(int(i), None)
        offset = max(categories, default=0)
        image[sl] = chip.image
        label[sl] = np.where(lab > 0, lab + offset, 0)
        for o in objs:
            categories[o.id + offset] = o.category
    present = set(categories.values())
    pool = [c for c in ("storage tank", "tennis court", "basketball court", "pond", "truck",
                        "bus") if c not in present] + ABSENT_ONLY_WORDS
    absent_cat = str(pool[int(rng.integers(len(pool)))])
    expr, etype = _absent_expression(rng, absent_cat)
    expr = expr.replace(" of the scene", " of the image")
    targets = [
        SceneTarget(expression=ref_chip.expression, category=ref_chip.category, type="category",
                    needs_disambiguation=False, absent=False, referent_id=ref_id,
                    n_same_category=1, details={"tile": divmod(tile, 3)}),
        SceneTarget(expression=expr, category=absent_cat, type=etype,
                    needs_disambiguation=False, absent=True),
    ]
    return Scene(image=image, valid=np.ones((n, n), bool), label=label, targets=targets,
                 gsd=CHIP_GSD, seed=seed, categories=categories)


def write_mosaic_3x3(out_tif: str | os.PathLike[str], seed: int = 0, chip_size: int = 192, *,
                     epsg: int = 32633) -> list[dict[str, Any]]:
    """Write :func:`generate_mosaic_3x3` as a GeoTIFF + ``.targets.gpkg`` (as :func:`write_scene`)."""
    crs = _crs(epsg)
    out = _check_out(out_tif)
    return _write_scene_files(out, generate_mosaic_3x3(seed, chip_size), crs)
