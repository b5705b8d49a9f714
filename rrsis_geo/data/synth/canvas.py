"""Objects on a canvas: the :class:`Chip` and object records, occupancy bookkeeping,
analytic shapes, object factories, region/relation predicates and placement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrsis_geo.data.synth.vocabulary import FLAT, PALETTES, SIZE_RANGES, VEHICLE_DIMS, VEHICLES


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
class Obj:
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


class Canvas:
    """Occupancy bookkeeping for placing objects without overlaps."""

    def __init__(self, h: int, w: int, scale: float = 1.0, valid: np.ndarray | None = None):
        self.h, self.w, self.scale = h, w, scale
        self.solid = np.zeros((h, w), bool)  # dilated footprints of solid objects
        self.flat = np.zeros((h, w), bool)  # ponds, courts (dilated)
        self.roadocc = np.zeros((h, w), bool)  # roads (dilated)
        self.valid = valid  # where objects may lie (scene: inside the nodata margin)
        self.objects: list[Obj] = []
        self.roads: list[Obj] = []

    def snapshot(self) -> tuple:
        return (self.solid.copy(), self.flat.copy(), self.roadocc.copy(), len(self.objects),
                len(self.roads))

    def restore(self, snap: tuple) -> None:
        self.solid, self.flat, self.roadocc = snap[0], snap[1], snap[2]
        del self.objects[snap[3]:]
        del self.roads[snap[4]:]

    def fits(self, o: Obj, inside: bool = True) -> bool:
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

    def add(self, o: Obj, gap: int | None = None) -> Obj:
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


def _or_dilated(target: np.ndarray, o: Obj, r: int) -> None:
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


def _window(cv: Canvas, cx: float, cy: float, ex: float, ey: float):
    x0 = max(0, int(math.floor(cx - ex)))
    x1 = min(cv.w, int(math.ceil(cx + ex)) + 1)
    y0 = max(0, int(math.floor(cy - ey)))
    y1 = min(cv.h, int(math.ceil(cy + ey)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return y0, x0, ys, xs


def local(ys: np.ndarray, xs: np.ndarray, cx: float, cy: float, ang: float):
    """Coordinates along (u) and across (v) an object rotated by ``ang`` (radians)."""
    c, s = math.cos(ang), math.sin(ang)
    dx, dy = xs - cx, ys - cy
    return dx * c + dy * s, -dx * s + dy * c


def _rect_obj(cv: Canvas, cat: str, cx: float, cy: float, length: float, width: float,
              ang: float, wing: tuple[float, float, float] | None = None) -> Obj | None:
    """Rotated rectangle (optionally + a wing rectangle: L-shape). ``wing`` = (wl, ww, side)."""
    r = math.hypot(length, width) / 2 + (max(wing[0], wing[1]) * 1.5 if wing else 0)
    win = _window(cv, cx, cy, r, r)
    if win is None:
        return None
    y0, x0, ys, xs = win
    u, v = local(ys, xs, cx, cy, ang)
    m = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    if wing is not None:
        wl, ww, side = wing
        # wing hangs off one end of the main block, on side ``side`` (+1/-1)
        wu = length / 2 - wl / 2
        wv = side * (width / 2 + ww / 2 - 0.5)
        m |= (np.abs(u - wu) <= wl / 2) & (np.abs(v - wv) <= ww / 2)
    return Obj(cat, y0, x0, m, p={"cx": cx, "cy": cy, "L": length, "W": width, "ang": ang,
                                   "wing": wing})


def _blob_obj(cv: Canvas, cat: str, cx: float, cy: float, r0: float, rng: np.random.Generator,
              wobble: float) -> Obj | None:
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
    return Obj(cat, y0, x0, m, p={"cx": cx, "cy": cy, "r": r0})


# --------------------------------------------------------------------------------------------
# object factories (sizes in chip px × canvas scale)
# --------------------------------------------------------------------------------------------


def _pick_size(rng: np.random.Generator, cat: str, size_class: str) -> float:
    lo, hi = SIZE_RANGES[cat][size_class]
    return float(rng.uniform(lo, hi))


def make_object(cv: Canvas, rng: np.random.Generator, cat: str, cx: float, cy: float, *,
                colour: str | None = None, size_class: str = "medium",
                ang: float | None = None) -> Obj | None:
    """Build (not place) one object of ``cat`` centred near (cx, cy) in canvas pixels."""
    s = cv.scale
    if cat in PALETTES and colour is None:
        colour = str(rng.choice(PALETTES[cat]))
    if ang is None:
        if cat in ("building", "tennis court", "basketball court"):
            ang = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.12))
        else:
            ang = float(rng.uniform(0, math.pi))
    o: Obj | None
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


def make_road(cv: Canvas, rng: np.random.Generator, *, horizontal: bool | None = None,
               pos: float | None = None) -> Obj:
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
    u, v = local(ys, xs, cx, cy, ang)
    m = np.abs(v) <= width / 2
    return Obj("road", y0, x0, m, p={"cx": cx, "cy": cy, "W": width, "ang": ang})


def _on_road_point(rng: np.random.Generator, cv: Canvas, road: Obj) -> tuple[float, float, float]:
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


def region_in(region: str, fx: float, fy: float) -> bool:
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


def region_out(region: str, fx: float, fy: float) -> bool:
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


def region_box(region: str) -> tuple[float, float, float, float]:
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


def _gap(a: Obj, b: Obj) -> float:
    """Chebyshev gap between bounding boxes (0 when they overlap)."""
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return float(max(ax0 - bx1, bx0 - ax1, ay0 - by1, by0 - ay1, 0))


def relation_holds(rel: str, o: Obj, anchor: Obj, s: float) -> bool:
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


def relation_clearly_not(rel: str, o: Obj, anchor: Obj, s: float) -> bool:
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


def anchor_mask_cache(anchor: Obj, o: Obj) -> np.ndarray:
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


def place(cv: Canvas, rng: np.random.Generator, cat: str, *, tries: int = 40,
           box: tuple[float, float, float, float] | None = None,
           check: Callable[[Obj], bool] | None = None, inside: bool = True,
           road: Obj | None = None, **kw: Any) -> Obj | None:
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


def frac(cv: Canvas, o: Obj) -> tuple[float, float]:
    x, y = o.centroid
    return x / cv.w, y / cv.h
