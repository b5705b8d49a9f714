"""Scenarios: a referent plus same-category distractors (and an anchor) placed so that the
sentence's rule (colour, size, region, relation) picks out the referent alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrsis_geo.data.synth.canvas import (
    Canvas,
    Obj,
    frac,
    make_road,
    place,
    region_box,
    region_in,
    region_out,
    relation_clearly_not,
    relation_holds,
)
from rrsis_geo.data.synth.vocabulary import (
    CATEGORIES,
    CLUTTER_WEIGHTS,
    OBJECT_HALF_EXTENT,
    PALETTES,
    REFERENT_WEIGHTS,
    REGIONS,
    RELATION_ANCHORS,
    SIZE_RANGES,
    VEHICLES,
)


@dataclass
class Scenario:
    type: str
    category: str
    referent: Obj
    distractors: list[Obj]
    anchor: Obj | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Retry(Exception):
    """The scenario could not be placed; try again with fresh random draws."""


def _fits_chip(cat: str, cv: Canvas) -> bool:
    return OBJECT_HALF_EXTENT[cat] * cv.scale * 2.2 <= min(cv.w, cv.h)


def _choose(rng: np.random.Generator, weights: dict[str, float], allowed: Iterable[str]) -> str:
    allowed = [c for c in allowed if c in weights]
    if not allowed:
        raise Retry
    p = np.array([weights[c] for c in allowed], float)
    return str(allowed[int(rng.choice(len(allowed), p=p / p.sum()))])


def _n_distractors(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))


def veh_road(cv: Canvas, rng: np.random.Generator, cat: str) -> Obj | None:
    """Vehicles go on the road most of the time when there is one."""
    if cat in VEHICLES and cv.roads and rng.random() < 0.7:
        return cv.roads[int(rng.integers(len(cv.roads)))]
    return None


def scn_category(cv, rng, cat) -> Scenario:
    if cat == "road":
        if not cv.roads:
            cv.add(make_road(cv, rng))
        return Scenario("category", "road", cv.roads[0], [])
    o = place(cv, rng, cat, road=veh_road(cv, rng, cat))
    if o is None:
        raise Retry
    return Scenario("category", cat, o, [])


def scn_colour(cv, rng, cat, with_size: bool = False, colour: str | None = None) -> Scenario:
    palette = PALETTES[cat]
    colour = colour or str(rng.choice(palette))
    others = [c for c in palette if c != colour]
    det: dict[str, Any] = {"attribute": "colour", "colour": colour}
    if with_size:
        size = str(rng.choice(["small", "large"]))
        opp = "large" if size == "small" else "small"
        ref = place(cv, rng, cat, colour=colour, size_class=size)
        if ref is None:
            raise Retry
        # A: same colour other size; B: other colour same size -> both words are needed
        a = place(cv, rng, cat, colour=colour, size_class=opp)
        b = place(cv, rng, cat, colour=str(rng.choice(others)), size_class=size)
        ds = [d for d in (a, b) if d is not None]
        if not ds or not _size_ok(ref, [d for d in ds if d.colour == colour], size):
            raise Retry
        det.update(attribute="colour+size", size=size)
        return Scenario("attribute", cat, ref, ds, details=det)
    ref = place(cv, rng, cat, colour=colour, road=veh_road(cv, rng, cat))
    if ref is None:
        raise Retry
    ds = []
    for _ in range(_n_distractors(rng)):
        d = place(cv, rng, cat, colour=str(rng.choice(others)), road=veh_road(cv, rng, cat))
        if d is not None:
            ds.append(d)
    if not ds:
        raise Retry
    return Scenario("attribute", cat, ref, ds, details=det)


def _size_ok(ref: Obj, others: list[Obj], size: str) -> bool:
    for d in others:
        if size in ("large", "largest") and ref.area < 1.8 * d.area:
            return False
        if size in ("small", "smallest") and 1.8 * ref.area > d.area:
            return False
    return True


def scn_size(cv, rng, cat, size: str | None = None, superlative: bool = False) -> Scenario:
    size = size or str(rng.choice(["large", "small"]))
    ref = place(cv, rng, cat, size_class=size)
    if ref is None:
        raise Retry
    ds = []
    other_classes = ["small", "medium"] if size == "large" else ["medium", "large"]
    for _ in range(_n_distractors(rng)):
        d = place(cv, rng, cat, size_class=str(rng.choice(other_classes)),
                   check=lambda o: _size_ok(ref, [o], size))
        if d is not None:
            ds.append(d)
    if not ds:
        raise Retry
    word = size if len(ds) == 1 and not superlative else (
        "largest" if size == "large" else "smallest")
    return Scenario("attribute", cat, ref, ds,
                     details={"attribute": "size", "size": word, "count": len(ds) + 1})


def scn_absolute(cv, rng, cat, region: str | None = None) -> Scenario:
    region = region or str(rng.choice(REGIONS))
    road = veh_road(cv, rng, cat)

    def in_region(o: Obj) -> bool:
        return region_in(region, *frac(cv, o))

    def out_region(o: Obj) -> bool:
        return region_out(region, *frac(cv, o))

    ref = place(cv, rng, cat, box=region_box(region), check=in_region, road=road, tries=60)
    if ref is None:
        raise Retry
    ds = []
    for _ in range(_n_distractors(rng)):
        d = place(cv, rng, cat, check=out_region, road=veh_road(cv, rng, cat))
        if d is not None:
            ds.append(d)
    if not ds:
        raise Retry
    return Scenario("spatial-absolute", cat, ref, ds, details={"region": region})


def _near_box(cv: Canvas, anchor: Obj, rel: str, reach: float) -> tuple[float, ...]:
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


def scn_relative(cv, rng, cat, anchors: list[str] | None = None,
                  rels: list[str] | None = None) -> Scenario:
    if anchors is None:
        anchors = [a for a in RELATION_ANCHORS.get(cat, []) if a == "road" or _fits_chip(a, cv)]
    if not anchors:
        raise Retry
    acat = str(rng.choice(anchors))
    s = cv.scale
    if acat == "road":
        if not cv.roads:
            cv.add(make_road(cv, rng))
        anchor, rel = cv.roads[0], "on"
    else:
        rel = str(rng.choice(rels or ["left", "right", "above", "below", "near"]))
        # anchor roughly central (relative sides need room on both sides)
        box = {"left": (0.45, 0.6, 0.25, 0.75), "right": (0.4, 0.55, 0.25, 0.75),
               "above": (0.25, 0.75, 0.45, 0.6), "below": (0.25, 0.75, 0.4, 0.55),
               "near": (0.2, 0.8, 0.2, 0.8)}[rel]
        anchor = place(cv, rng, acat, box=box, tries=60)
        if anchor is None:
            raise Retry
    road = cv.roads[0] if (rel == "on" or (cat in VEHICLES and cv.roads and rng.random() < 0.5)) \
        else None
    reach = (OBJECT_HALF_EXTENT[cat] * 1.5 + (10 if rel == "near" else 20)) * s
    ref = place(cv, rng, cat, check=lambda o: relation_holds(rel, o, anchor, s),
                 box=None if rel == "on" else _near_box(cv, anchor, rel, reach),
                 road=road, tries=120)
    if ref is None:
        raise Retry
    ds = []
    for _ in range(_n_distractors(rng)):
        d = place(cv, rng, cat, check=lambda o: relation_clearly_not(rel, o, anchor, s),
                   road=None if rel == "on" else veh_road(cv, rng, cat), tries=60)
        if d is not None:
            ds.append(d)
    if not ds:
        raise Retry
    return Scenario("spatial-relative", cat, ref, ds, anchor=anchor,
                     details={"relation": rel, "anchor": acat})


def scn_combined(cv, rng, cat) -> Scenario:
    use_size = cat not in PALETTES or (cat in SIZE_RANGES and rng.random() < 0.35)
    region = str(rng.choice(["left", "right", "top", "bottom"] if
                            OBJECT_HALF_EXTENT[cat] > 25 else REGIONS[:8]))
    road = veh_road(cv, rng, cat)

    def fr(o: Obj) -> tuple[float, float]:
        return frac(cv, o)

    if use_size:
        size = str(rng.choice(["large", "small"]))
        opp = "small" if size == "large" else "large"
        ref = place(cv, rng, cat, size_class=size, box=region_box(region),
                     check=lambda o: region_in(region, *fr(o)), tries=60)
        if ref is None:
            raise Retry
        a = place(cv, rng, cat, size_class=size, check=lambda o: region_out(region, *fr(o)))
        b = place(cv, rng, cat, size_class=opp, box=region_box(region),
                   check=lambda o: region_in(region, *fr(o)) and _size_ok(ref, [o], size))
        ds = [d for d in (a, b) if d is not None]
        if not ds:
            raise Retry
        return Scenario("combined", cat, ref, ds,
                         details={"attribute": "size", "size": size, "region": region})
    colour = str(rng.choice(PALETTES[cat]))
    others = [c for c in PALETTES[cat] if c != colour]
    ref = place(cv, rng, cat, colour=colour, box=region_box(region), road=road,
                 check=lambda o: region_in(region, *fr(o)), tries=60)
    if ref is None:
        raise Retry
    # A: same colour elsewhere; B: other colour in the same region -> both words are needed
    a = place(cv, rng, cat, colour=colour, check=lambda o: region_out(region, *fr(o)),
               road=veh_road(cv, rng, cat))
    b = place(cv, rng, cat, colour=str(rng.choice(others)), box=region_box(region),
               check=lambda o: region_in(region, *fr(o)), road=veh_road(cv, rng, cat))
    ds = [d for d in (a, b) if d is not None]
    if not ds:
        raise Retry
    return Scenario("combined", cat, ref, ds,
                     details={"attribute": "colour", "colour": colour, "region": region})


def build_scenario(cv: Canvas, rng: np.random.Generator, etype: str,
                    forbid: frozenset[str] = frozenset()) -> Scenario:
    """Referent + distractors for one expression type; ``forbid``: categories not to use."""
    fits = [c for c in CATEGORIES if (c == "road" or _fits_chip(c, cv)) and c not in forbid]
    if etype == "category":
        cat = _choose(rng, REFERENT_WEIGHTS, fits)
        return scn_category(cv, rng, cat)
    if etype == "attribute":
        mode = str(rng.choice(["colour", "size", "colour+size"], p=[0.5, 0.3, 0.2]))
        if mode == "colour":
            return scn_colour(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                                [c for c in fits if c in PALETTES]))
        if mode == "size":
            return scn_size(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                              [c for c in fits if c in SIZE_RANGES]))
        return scn_colour(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                            [c for c in fits if c in ("building",
                                                                      "storage tank")]),
                           with_size=True)
    if etype == "spatial-absolute":
        return scn_absolute(cv, rng, _choose(rng, REFERENT_WEIGHTS,
                                              [c for c in fits if c != "road"]))
    if etype == "spatial-relative":
        cat = _choose(rng, REFERENT_WEIGHTS, [c for c in fits if c in RELATION_ANCHORS])
        anchors = [a for a in RELATION_ANCHORS[cat] if a in fits]
        return scn_relative(cv, rng, cat, anchors=anchors)
    if etype == "combined":
        return scn_combined(cv, rng, _choose(
            rng, REFERENT_WEIGHTS, [c for c in fits if c in PALETTES or
                                    c in ("building", "storage tank", "tree")]))
    raise ValueError(etype)


def add_clutter(cv: Canvas, rng: np.random.Generator, protected: set[str], n: int) -> None:
    """Other-category objects (never of a protected category: the referent's or anchor's)."""
    allowed = [c for c in CLUTTER_WEIGHTS if c not in protected and _fits_chip(c, cv)]
    if not allowed:
        return
    for _ in range(n):
        cat = _choose(rng, CLUTTER_WEIGHTS, allowed)
        k = int(rng.integers(1, 4)) if cat == "tree" else 1
        for _ in range(k):
            place(cv, rng, cat, tries=8, inside=False, road=veh_road(cv, rng, cat),
                   size_class=str(rng.choice(["small", "medium"])) if cat in SIZE_RANGES
                   else "medium")
