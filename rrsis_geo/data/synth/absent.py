"""Absent (negative) chips: the sentence names something the chip does not contain and the
mask is empty (kinds: category, attribute, spatial).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rrsis_geo.data.synth.canvas import Canvas, Chip, Obj, region_out
from rrsis_geo.data.synth.expressions import (CATEGORY_FORMS, colour_word, noun_word, pick,
                                              size_word)
from rrsis_geo.data.synth.vocabulary import (
    ABSENT_KIND_LETTER,
    ABSENT_KIND_WEIGHTS,
    ABSENT_ONLY_WORDS,
    ABSENT_TYPE,
    CATEGORIES,
    CATEGORY_WORDS,
    CONFUSABLE,
    PALETTES,
    REGION_PHRASES,
    REGIONS,
    RELATION_PHRASES,
    SIZE_RANGES,
)


def _visible_frac(label: np.ndarray, o: Obj) -> list[tuple[float, float]]:
    """Footprint centroid and (if any pixel shows) visible-pixel centroid, in frame fractions."""
    h, w = label.shape
    x, y = o.centroid
    out = [(x / w, y / h)]
    ys, xs = np.nonzero(label == o.id)
    if ys.size:
        out.append(((float(xs.mean()) + 0.5) / w, (float(ys.mean()) + 0.5) / h))
    return out


def _absent_category(rng: np.random.Generator, cv: Canvas, visible: list[Obj],
                     confusable: float = 0.0) -> tuple[str, str, dict[str, Any]]:
    """(a) a category with no object in the chip, phrased like a positive sentence would be.

    ``confusable``: the share of these negatives that name a look-alike of a category the chip
    shows (:data:`CONFUSABLE`: "the truck" on a chip with cars only), when it has one."""
    present = {o.category for o in cv.objects}
    drawable = [c for c in CATEGORIES if c not in present]
    siblings = sorted({s for c in present for s in CONFUSABLE.get(c, ()) if s not in present})
    if confusable > 0 and siblings and rng.random() < confusable:
        cat = siblings[int(rng.integers(len(siblings)))]
        text = pick(rng, CATEGORY_FORMS).format(n=noun_word(rng, cat, cv))
        return cat, text, {"pool": "confusable"}
    # a drawable category is the harder (and, for tile-wise inference, the usual) negative
    if drawable and rng.random() < 0.7:
        cat, pool = pick(rng, drawable), "drawable"
    else:
        cat, pool = pick(rng, ABSENT_ONLY_WORDS), "never-drawn"
    # "vehicle" only when no vehicle at all is present (it would name a truck or a bus)
    noun = noun_word(rng, cat, cv) if cat in CATEGORY_WORDS else cat
    det: dict[str, Any] = {"pool": pool}
    anchors = sorted({o.category for o in visible if o.category in CATEGORY_WORDS})
    forms = ["plain", "plain", "region"]
    if cat in PALETTES:
        forms.append("colour")
    if cat in SIZE_RANGES:
        forms.append("size")
    if anchors:
        forms.append("relation")
    form = pick(rng, forms)
    if form == "colour":
        det["colour"] = str(rng.choice(PALETTES[cat]))
        text = pick(rng, ["the {c} {n}", "the {n} that is {c}"]).format(
            c=colour_word(rng, det["colour"]), n=noun)
    elif form == "size":
        det["size"] = str(rng.choice(["large", "small"]))
        text = f"the {size_word(rng, det['size'])} {noun}"
    elif form == "region":
        det["region"] = str(rng.choice(REGIONS))
        text = f"the {noun} {pick(rng, REGION_PHRASES[det['region']])}"
    elif form == "relation":
        det["anchor"] = pick(rng, anchors)
        det["relation"] = str(rng.choice(["left", "right", "above", "below", "near"]))
        text = "the {n} {rel} the {a}".format(
            n=noun, rel=pick(rng, RELATION_PHRASES[det["relation"]]),
            a=pick(rng, CATEGORY_WORDS[det["anchor"]]))
    else:
        text = pick(rng, CATEGORY_FORMS).format(n=noun)
    return cat, text, det


def _absent_attribute(rng: np.random.Generator, cv: Canvas, visible: list[Obj]
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
    noun = noun_word(rng, cat, cv)
    forms = ["the {c} {n}", "the {c} {n}", "the {n} that is {c}", "{c} {n}"]
    if cat == "building":
        forms += ["the building with the {c} roof", "the {c} roofed building"]
    text = pick(rng, forms).format(c=colour_word(rng, colour), n=noun)
    present = sorted({str(o.colour) for o in cv.objects if o.category == cat})
    return cat, text, {"colour": colour, "present_colours": present}


def _absent_spatial(rng: np.random.Generator, cv: Canvas, label: np.ndarray,
                    visible: list[Obj]) -> tuple[str, str, dict[str, Any]] | None:
    """(c) a present category in a region that every one of its objects is clearly out of."""
    cands: list[tuple[str, str]] = []
    for cat in sorted({o.category for o in visible if o.category != "road"}):
        objs = [o for o in cv.objects if o.category == cat]
        fracs = [f for o in objs for f in _visible_frac(label, o)]
        cands += [(cat, r) for r in REGIONS if all(region_out(r, fx, fy) for fx, fy in fracs)]
    if not cands:
        return None
    cat, region = cands[int(rng.integers(len(cands)))]
    noun = noun_word(rng, cat, cv)
    text = pick(rng, ["the {n} {r}", "the {n} {r}", "the {n} located {r}"]).format(
        n=noun, r=pick(rng, REGION_PHRASES[region]))
    return cat, text, {"region": region}


def absent_chip(rng: np.random.Generator, cv: Canvas, img: np.ndarray, label: np.ndarray,
                 seed: int, base: str, confusable: float = 0.0) -> Chip | None:
    """A negative chip on an already rendered scene: empty mask, sentence of kind a/b/c.

    Kinds (``details["absent_kind"]``, letter in ``details["kind"]``): ``category`` (a) names
    a category with no object here (a drawable one or one of :data:`ABSENT_ONLY_WORDS`);
    ``attribute`` (b) a present category with a palette colour none of its objects has;
    ``spatial`` (c) a present category with a region every object of it is clearly out of
    (:func:`region_out` on footprint and visible centroids). b/c fall back to a when the
    chip offers no such sentence. ``base`` is the scenario type the scene was built with;
    ``confusable`` see :func:`_absent_category`.
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
        res = _absent_category(rng, cv, visible, confusable)
    cat, text, det = res
    union = np.isin(label, [o.id for o in cv.objects if o.category == cat])
    if kind != "category" and not union.any():
        return None  # cannot happen (b/c use visible categories); keep the contract anyway
    details = {"absent_kind": kind, "kind": ABSENT_KIND_LETTER[kind], "base_type": base, **det}
    return Chip(image=img, mask=np.zeros(label.shape, bool), expression=text, category=cat,
                type=ABSENT_TYPE, needs_disambiguation=False, category_union_mask=union,
                seed=seed, details=details)
