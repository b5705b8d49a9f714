"""Referring expressions from labelled objects in one chip.

Every sentence names one class of the label layers and is checked against *every* object of that
class that shows in the chip, cut-off ones included: a sentence that could also describe another
object, or whose truth is borderline for one, is dropped, never kept. Sentence forms follow the
wording of the synthetic generator (:mod:`rrsis_geo.data.synthetic`), which is what FIANet's text
decoupling (:mod:`rrsis_geo.text.decouple`) and scene parsing (:mod:`rrsis_geo.inference.scene`)
read: the class word, position phrases such as "in the upper left", superlatives "largest".

Types (metadata ``type``):

``category``
    "the tree": the chip shows exactly one object of the class.
``all``
    "all the trees" / "the trees": two or more; the mask is the union of all of them (for
    ``segment --mode all``).
``spatial-absolute``
    "the tree in the upper left", "the tree on the left", "the tree in the middle": the
    referent's visible centroid lies in a cell of a 3 x 3 grid (or a whole column/row for
    "on the left", "at the top") by more than :data:`BAND` of the chip side, and every other
    object of the class lies outside it by more than :data:`BAND` (within the band it counts as
    ambiguous and the phrase is not used). The simplest unique phrase is chosen.
``attribute``
    "the largest tree" / "the smallest tree": a fully visible referent whose area beats every
    other object of the class by a factor :data:`SIZE_MARGIN` (cut-off objects compare by their
    true area for "largest" and by their visible part for "smallest", the conservative side
    both ways).
``absent``
    "the tree" in a chip with no tree: empty mask (negative sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: half-width of the borderline band around the 1/3 and 2/3 grid lines (chip fractions)
BAND = 0.05
#: "largest"/"smallest" need this area ratio to every other object of the class
SIZE_MARGIN = 1.5
#: a referent needs this many visible pixels ...
MIN_REFERENT_PX = 16
#: ... and this share of its area inside the chip
MIN_VISIBLE_SHARE = 0.5

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


@dataclass
class ChipObject:
    """One labelled object as it shows in a chip.

    Attributes:
        fid: feature id; category: class name.
        mask: bool [S, S] visible pixels.
        full_px: the whole object's area in work pixels (also the part outside the chip).
        cut: True when part of it lies outside the chip.
        attrs: extra attributes (colour, ...) filled by the attribute step.
    """

    fid: str
    category: str
    mask: np.ndarray
    full_px: float
    cut: bool
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def vis_px(self) -> int:
        return int(self.mask.sum())

    @property
    def centroid(self) -> tuple[float, float]:
        """Visible centroid (fx, fy) in chip fractions (x right, y down)."""
        ys, xs = np.nonzero(self.mask)
        h, w = self.mask.shape
        return float((xs.mean() + 0.5) / w), float((ys.mean() + 0.5) / h)

    @property
    def eligible(self) -> bool:
        """Large and visible enough to be a referent."""
        return self.vis_px >= MIN_REFERENT_PX and self.vis_px >= MIN_VISIBLE_SHARE * self.full_px


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


def plural(noun: str) -> str:
    """English plural of a class phrase's last word ("storage tank" -> "storage tanks")."""
    head, _, last = noun.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        p = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


# --------------------------------------------------------------------------- 3 x 3 positions
def _axis_state(v: float, cells: set[int]) -> str:
    """'in', 'out' or 'ambiguous' for a coordinate v (0..1) and a set of grid cells."""
    edges = (0.0, 1 / 3, 2 / 3, 1.0)
    clearly_in = any(edges[k] + (BAND if k > 0 else -1) < v < edges[k + 1] - (BAND if k < 2
                                                                               else -1)
                     for k in cells)
    if clearly_in:
        return "in"
    near = any(edges[k] - BAND <= v <= edges[k + 1] + BAND for k in cells)
    return "ambiguous" if near else "out"


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


def unique_position(ref: ChipObject, others: list[ChipObject]) -> str | None:
    """The simplest position phrase true for ``ref`` and clearly false for every other."""
    fx, fy = ref.centroid
    cents = [o.centroid for o in others]
    for phrase, (cols, rows) in POSITIONS.items():
        if region_state(fx, fy, cols, rows) != "in":
            continue
        if all(region_state(ox, oy, cols, rows) == "out" for ox, oy in cents):
            return phrase
    return None


# --------------------------------------------------------------------------- size
def superlative(ref: ChipObject, others: list[ChipObject]) -> str | None:
    """"largest"/"smallest" when ``ref`` is fully visible and wins by :data:`SIZE_MARGIN`."""
    if ref.cut or not others:
        return None
    a = ref.full_px
    if all(a >= SIZE_MARGIN * o.full_px for o in others):
        return "largest"
    if all(o.vis_px >= SIZE_MARGIN * a for o in others):
        return "smallest"
    return None


# --------------------------------------------------------------------------- per chip
def chip_expressions(objects: list[ChipObject], rng: np.random.Generator) -> list[Expression]:
    """All positive sentences of one chip (see the module docstring)."""
    out: list[Expression] = []
    by_class: dict[str, list[ChipObject]] = {}
    for o in objects:
        if o.vis_px > 0:
            by_class.setdefault(o.category, []).append(o)
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
                    "area_px": round(ref.full_px, 1), "centroid": [round(v, 4) for v in
                                                                   ref.centroid]}
            if not many:
                out.append(Expression(f"the {cat}", "category", cat, "the {n}", ref.mask, union,
                                      [ref.fid], False, base))
            pos = unique_position(ref, others)
            if pos is not None:
                out.append(Expression(f"the {cat} {pos}", "spatial-absolute", cat,
                                      "the {n} {r}", ref.mask, union, [ref.fid], many,
                                      {**base, "region": pos}))
            sup = superlative(ref, others)
            if sup is not None:
                out.append(Expression(f"the {sup} {cat}", "attribute", cat, "the {z} {n}",
                                      ref.mask, union, [ref.fid], True,
                                      {**base, "attribute": "size", "size": sup}))
    return out


def absent_expression(category: str, shape: tuple[int, int]) -> Expression:
    """A negative sentence: the class does not show in the chip; empty mask."""
    empty = np.zeros(shape, bool)
    return Expression(f"the {category}", "absent", category, "the {n}", empty, empty, [], False,
                      {"absent_kind": "category", "kind": "a"})
