"""Referring expressions from labelled objects in one chip.

Every sentence names one class of the label layers and is checked against *every* object of that
class that shows in the chip, cut-off ones included: a sentence that could also describe another
object, or whose truth is borderline for one, is dropped, never kept. Sentence forms follow the
wording of the synthetic generator (:mod:`rrsis_geo.data.synth`), which is what FIANet's text
decoupling (:mod:`rrsis_geo.text.decouple`) and scene parsing (:mod:`rrsis_geo.text.scene_words`)
read: the class word, colour words, "largest"/"smallest", position phrases such as "in the upper
left", relations such as "left of the building" / "next to the building".

Descriptors of a referent:

* filters, each true ("in"), false ("out") or borderline ("ambiguous") for any object:
  colour (:mod:`.attributes`), absolute position (3 x 3 grid of the chip; a point within
  :data:`BAND` of a grid line is borderline; "on the left" / "at the top" cover a whole column
  or row), relation to a *unique* object of another class (four direction sectors of 45 degrees
  around the anchor, borderline within :data:`SECTOR_BAND` degrees of their edges, only within
  :data:`RELATION_LIMIT` of the anchor; other objects count as "out" only outside the whole
  90-degree quadrant; "next to" = gap <= :data:`NEAR`, clearly not beyond three times that);
* rankers, "largest"/"smallest" (a fully visible referent, area ratio :data:`SIZE_MARGIN` to each
  rival; a cut-off rival compares by its true area for "largest" and by its visible part for
  "smallest", the conservative side both ways) and the extremes "leftmost", "rightmost",
  "topmost", "bottommost" (visible centroids :data:`EXTREME_MARGIN` of the chip apart).

A combination describes the referent uniquely when the referent is "in" for every filter and
every other object of the class is "out" for at least one filter, or - with a ranker - is beaten
clearly by the referent. Sentences are built incrementally: one descriptor, then two, and the
first unique combination of each family is kept.

Types (metadata ``type``):

``category``     "the tree": the chip shows exactly one object of the class.
``all``          "all the trees" / "the trees": two or more; mask = union of all of them.
``attribute``    "the green tree", "the largest tree", "the largest green tree".
``spatial-absolute``  "the tree in the upper left", "the leftmost tree".
``spatial-relative``  "the tree left of the building", "the tree next to the pond".
``combined``     "the green tree on the left" (only when neither part alone is unique).
``absent``       "the tree" in a chip with no tree: empty mask (negative sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrsis_geo.data.layers.attributes import colour_state, dominant_colour
from rrsis_geo.text.classes import plural

#: half-width of the borderline band around the 1/3 and 2/3 grid lines (chip fractions)
BAND = 0.05
#: "largest"/"smallest" need this area ratio to every rival
SIZE_MARGIN = 1.5
#: extremes need the visible centroids this far apart (chip fractions)
EXTREME_MARGIN = 0.08
#: a referent needs this many visible pixels ...
MIN_REFERENT_PX = 16
#: ... and this share of its area inside the chip
MIN_VISIBLE_SHARE = 0.5
#: "next to": gap at most this share of the chip side; clearly not beyond 3x
NEAR = 0.05
#: direction relations only within this gap (share of the chip side); clearly not beyond 1.5x
RELATION_LIMIT = 0.25
#: degrees around a sector edge that count as borderline
SECTOR_BAND = 7.5

#: position phrases: name -> (allowed columns, allowed rows) in the 3 x 3 grid (None = any);
#: order = preference (the simplest unique phrase wins)
POSITIONS: dict[str, tuple[set[int] | None, set[int] | None]] = {
    "on the left": ({0}, None),
    "on the right": ({2}, None),
    "at the top": (None, {0}),
    "at the bottom": (None, {2}),
    "in the upper left": ({0}, {0}),
    "in the upper right": ({2}, {0}),
    "in the lower left": ({0}, {2}),
    "in the lower right": ({2}, {2}),
    "in the middle": ({1}, {1}),
}
#: relation -> (direction angle in degrees, x right / y up; None = nearness), wordings
RELATIONS: dict[str, tuple[float | None, tuple[str, ...]]] = {
    "next to": (None, ("next to", "beside", "near")),
    "left of": (180.0, ("left of", "to the left of", "west of")),
    "right of": (0.0, ("right of", "to the right of", "east of")),
    "above": (90.0, ("above", "north of")),
    "below": (270.0, ("below", "south of")),
}
EXTREMES = {"leftmost": (0, 1.0), "rightmost": (0, -1.0), "topmost": (1, 1.0),
            "bottommost": (1, -1.0)}


@dataclass
class ChipObject:
    """One labelled object as it shows in a chip.

    Attributes:
        fid: feature id; category: class name.
        mask: bool [S, S] visible pixels.
        full_px: the whole object's area in chip pixels (also the part outside the chip).
        cut: True when part of it lies outside the chip.
        geometry: shapely geometry in chip pixel coordinates (for gaps), or None.
        colours: colour word -> share of its exclusive pixels (None: not measured).
    """

    fid: str
    category: str
    mask: np.ndarray
    full_px: float
    cut: bool
    geometry: Any = None
    colours: dict[str, float] | None = None

    @property
    def vis_px(self) -> int:
        return int(self.mask.sum())

    @property
    def centroid(self) -> tuple[float, float]:
        """Visible centroid (fx, fy) in chip fractions (x right, y down)."""
        if not hasattr(self, "_centroid"):
            ys, xs = np.nonzero(self.mask)
            h, w = self.mask.shape
            self._centroid = (float((xs.mean() + 0.5) / w), float((ys.mean() + 0.5) / h))
        return self._centroid

    @property
    def eligible(self) -> bool:
        """Large and visible enough to be a referent (or an anchor)."""
        return self.vis_px >= MIN_REFERENT_PX and self.vis_px >= MIN_VISIBLE_SHARE * self.full_px

    def gap(self, other: ChipObject) -> float:
        """Distance between the two objects in chip pixels."""
        if self.geometry is not None and other.geometry is not None:
            return float(self.geometry.distance(other.geometry))
        from scipy import ndimage

        if not other.mask.any():
            return math.inf
        dist = ndimage.distance_transform_edt(~other.mask)
        return float(dist[self.mask].min()) if self.mask.any() else math.inf


@dataclass
class Expression:
    """One generated sentence with its mask."""

    text: str
    type: str
    category: str
    template: str
    mask: np.ndarray
    union: np.ndarray
    feature_ids: list[str]
    needs_disambiguation: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Desc:
    """One descriptor: kind colour|size|extreme (before the noun) or position|relation (after)."""

    kind: str
    word: str
    anchor: ChipObject | None = field(default=None, compare=False, hash=False)

    @property
    def ranker(self) -> bool:
        return self.kind in ("size", "extreme")


# --------------------------------------------------------------------------- filters
def _axis_state(v: float, cells: set[int]) -> str:
    """'in', 'out' or 'ambiguous' for a coordinate v (0..1) and a set of grid cells."""
    edges = (0.0, 1 / 3, 2 / 3, 1.0)
    lo = [-math.inf, 1 / 3 + BAND, 2 / 3 + BAND]
    hi = [1 / 3 - BAND, 2 / 3 - BAND, math.inf]
    if any(lo[k] < v < hi[k] for k in cells):
        return "in"
    if any(edges[k] - BAND <= v <= edges[k + 1] + BAND for k in cells):
        return "ambiguous"
    return "out"


def region_state(fx: float, fy: float, cols: set[int] | None, rows: set[int] | None) -> str:
    """Whether a point is clearly in a region, clearly out of it, or on its border."""
    states = []
    if cols is not None:
        states.append(_axis_state(fx, cols))
    if rows is not None:
        states.append(_axis_state(fy, rows))
    if "out" in states:
        return "out"
    if "ambiguous" in states:
        return "ambiguous"
    return "in"


def _angle(o: ChipObject, anchor: ChipObject) -> float:
    (ox, oy), (ax, ay) = o.centroid, anchor.centroid
    return math.degrees(math.atan2(-(oy - ay), ox - ax)) % 360.0


def _angdiff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def relation_state(o: ChipObject, anchor: ChipObject, rel: str, side: int) -> str:
    """Is ``o`` ``rel`` the anchor? ``side`` = chip side in pixels."""
    gap = o.gap(anchor)
    direction = RELATIONS[rel][0]
    if direction is None:
        near = NEAR * side
        return "in" if gap <= near else "out" if gap >= 3 * near else "ambiguous"
    limit = RELATION_LIMIT * side
    if gap >= 1.5 * limit:
        return "out"
    d = _angdiff(_angle(o, anchor), direction)
    if d <= 22.5 - SECTOR_BAND and gap <= limit:
        return "in"
    if d >= 45.0 + SECTOR_BAND:
        return "out"
    return "ambiguous"


def filter_state(d: Desc, o: ChipObject, side: int) -> str:
    if d.kind == "colour":
        return colour_state(o.colours, d.word)
    if d.kind == "position":
        cols, rows = POSITIONS[d.word]
        return region_state(*o.centroid, cols, rows)
    if d.kind == "relation":
        assert d.anchor is not None
        return relation_state(o, d.anchor, d.word, side)
    raise ValueError(d.kind)


def beats(d: Desc, ref: ChipObject, o: ChipObject) -> bool:
    """Does the ranker ``d`` clearly pick ``ref`` over ``o``?"""
    if d.kind == "size":
        if ref.cut:
            return False
        if d.word == "largest":
            return ref.full_px >= SIZE_MARGIN * o.full_px
        return o.vis_px >= SIZE_MARGIN * ref.full_px
    axis, sign = EXTREMES[d.word]
    return sign * (o.centroid[axis] - ref.centroid[axis]) >= EXTREME_MARGIN


def is_unique(combo: tuple[Desc, ...], ref: ChipObject, others: list[ChipObject],
              side: int) -> bool:
    """The combination is true for ``ref`` and clearly excludes every other object."""
    filters = [d for d in combo if not d.ranker]
    rankers = [d for d in combo if d.ranker]
    if len(rankers) > 1:
        return False
    if any(filter_state(d, ref, side) != "in" for d in filters):
        return False
    left = [o for o in others if all(filter_state(d, o, side) != "out" for d in filters)]
    if rankers:
        return all(beats(rankers[0], ref, o) for o in left)
    return not left


def superlative(ref: ChipObject, others: list[ChipObject]) -> str | None:
    """"largest"/"smallest" when ``ref`` wins clearly against every other object."""
    for word in ("largest", "smallest"):
        if others and all(beats(Desc("size", word), ref, o) for o in others):
            return word
    return None


# --------------------------------------------------------------------------- sentences
def _text(cat: str, combo: tuple[Desc, ...], rng: np.random.Generator) -> tuple[str, str]:
    """Sentence and template of a descriptor combination."""
    pre_rank = [d.word for d in combo if d.ranker]
    pre_col = [d.word for d in combo if d.kind == "colour"]
    post = []
    tpl_post = []
    for d in combo:
        if d.kind == "position":
            post.append(d.word)
            tpl_post.append("{r}")
    for d in combo:
        if d.kind == "relation":
            assert d.anchor is not None
            forms = RELATIONS[d.word][1]
            post.append(f"{forms[int(rng.integers(len(forms)))]} the {d.anchor.category}")
            tpl_post.append("{rel} the {a}")
    words = ["the", *pre_rank, *pre_col, cat, *post]
    tpl = ["the"] + (["{z}"] if pre_rank else []) + (["{c}"] if pre_col else []) + ["{n}"] \
        + tpl_post
    return " ".join(words), " ".join(tpl)


def _type(combo: tuple[Desc, ...]) -> str:
    kinds = {d.kind for d in combo}
    if "relation" in kinds:
        return "spatial-relative"
    attr = bool(kinds & {"colour", "size"})
    spatial = bool(kinds & {"position", "extreme"})
    if attr and spatial:
        return "combined"
    return "attribute" if attr else "spatial-absolute"


def referent_descriptors(ref: ChipObject, anchors: list[ChipObject], side: int
                         ) -> dict[str, list[Desc]]:
    """Candidate descriptors true for ``ref`` (rankers are checked against rivals later)."""
    out: dict[str, list[Desc]] = {"colour": [], "size": [], "position": [], "extreme": [],
                                  "relation": []}
    c = dominant_colour(ref.colours)
    if c is not None:
        out["colour"].append(Desc("colour", c))
    if not ref.cut:
        out["size"] += [Desc("size", "largest"), Desc("size", "smallest")]
    for phrase in POSITIONS:
        if filter_state(Desc("position", phrase), ref, side) == "in":
            out["position"].append(Desc("position", phrase))
    out["extreme"] += [Desc("extreme", w) for w in EXTREMES]
    for a in anchors:
        for rel in RELATIONS:
            d = Desc("relation", rel, a)
            if relation_state(ref, a, rel, side) == "in":
                out["relation"].append(d)
    return out


def _first_unique(candidates: list[tuple[Desc, ...]], ref, others, side):
    for combo in candidates:
        if is_unique(combo, ref, others, side):
            return combo
    return None


def describe(ref: ChipObject, others: list[ChipObject], anchors: list[ChipObject],
             side: int) -> list[tuple[Desc, ...]]:
    """The unique descriptor combinations kept for a referent, one per family.

    Families: attribute (colour; size; size + colour), spatial (position; else an extreme),
    relation (one relation; colour + relation), combined (colour or size with a
    position or extreme; only when neither the attribute nor the spatial family found one).
    """
    ds = referent_descriptors(ref, anchors, side)
    kept: list[tuple[Desc, ...]] = []
    attr = _first_unique([(d,) for d in ds["colour"] + ds["size"]]
                         + [(s, c) for s in ds["size"] for c in ds["colour"]], ref, others, side)
    if attr:
        kept.append(attr)
    pos = _first_unique([(d,) for d in ds["position"]] + [(d,) for d in ds["extreme"]],
                        ref, others, side)
    if pos:
        kept.append(pos)
    rel = _first_unique([(d,) for d in ds["relation"]]
                        + [(c, d) for c in ds["colour"] for d in ds["relation"]],
                        ref, others, side)
    if rel:
        kept.append(rel)
    if not attr and not pos:
        comb = _first_unique([(a, p) for a in ds["colour"] + ds["size"]
                              for p in ds["position"] + ds["extreme"]], ref, others, side)
        if comb:
            kept.append(comb)
    return kept


def chip_expressions(objects: list[ChipObject], rng: np.random.Generator) -> list[Expression]:
    """All positive sentences of one chip (see the module docstring)."""
    out: list[Expression] = []
    by_class: dict[str, list[ChipObject]] = {}
    for o in objects:
        if o.vis_px > 0:
            by_class.setdefault(o.category, []).append(o)
    if not by_class:
        return out
    side = next(iter(by_class.values()))[0].mask.shape[0]
    # anchors: the only object of their class in the chip, visible enough to be named
    anchors = [g[0] for g in by_class.values() if len(g) == 1 and g[0].eligible]
    for cat in sorted(by_class):
        group = by_class[cat]
        union = np.logical_or.reduce([o.mask for o in group])
        fids = [o.fid for o in group]
        many = len(group) > 1
        if many:
            form = ["all the {ns}", "the {ns}"][int(rng.integers(2))]
            out.append(Expression(form.format(ns=plural(cat)), "all", cat, form, union, union,
                                  fids, False, {"count": len(group)}))
        for ref in group:
            if not ref.eligible:
                continue
            others = [o for o in group if o is not ref]
            base = {"fid": ref.fid, "cut": ref.cut, "visible_px": ref.vis_px,
                    "area_px": round(ref.full_px, 1),
                    "centroid": [round(v, 4) for v in ref.centroid],
                    "colour": dominant_colour(ref.colours)}
            if not many:
                out.append(Expression(f"the {cat}", "category", cat, "the {n}", ref.mask, union,
                                      [ref.fid], False, base))
                pos = _first_unique([(d,) for d in referent_descriptors(
                    ref, [], side)["position"]], ref, others, side)
                combos = [pos] if pos else []
            else:
                combos = describe(ref, others, [a for a in anchors if a.category != cat], side)
            for combo in combos:
                text, tpl = _text(cat, combo, rng)
                det = dict(base)
                for d in combo:
                    det[d.kind] = d.word
                    if d.anchor is not None:
                        det["anchor"] = d.anchor.category
                        det["anchor_fid"] = d.anchor.fid
                out.append(Expression(text, _type(combo), cat, tpl, ref.mask, union,
                                      [ref.fid], many, det))
    return out


def absent_expression(category: str, shape: tuple[int, int]) -> Expression:
    """A negative sentence: the class does not show in the chip; empty mask."""
    empty = np.zeros(shape, bool)
    return Expression(f"the {category}", "absent", category, "the {n}", empty, empty, [], False,
                      {"absent_kind": "category", "kind": "a"})
