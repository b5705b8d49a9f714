"""Sentences for a built scenario: category nouns, colour/size words and the templates of
each expression type.
"""

from __future__ import annotations

import numpy as np

from rrsis_geo.data.synth.canvas import Canvas
from rrsis_geo.data.synth.scenarios import Scenario
from rrsis_geo.data.synth.vocabulary import (
    CATEGORY_WORDS,
    COLOUR_WORDS,
    REGION_PHRASES,
    RELATION_PHRASES,
    SCENE_REGION_PHRASES,
)


def pick(rng: np.random.Generator, options: list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def noun_word(rng: np.random.Generator, cat: str, cv: Canvas | None = None) -> str:
    words = CATEGORY_WORDS[cat]
    if cat == "car" and cv is not None and not any(o.category in ("truck", "bus")
                                                   for o in cv.objects):
        words = ["car", "car", "vehicle"]  # only cars: "vehicle" is unambiguous
    return pick(rng, words)


def colour_word(rng: np.random.Generator, colour: str) -> str:
    return pick(rng, COLOUR_WORDS[colour])


def size_word(rng: np.random.Generator, size: str, pair: bool = False) -> str:
    """``pair``: exactly two objects of the category, so comparatives are fine too."""
    return pick(rng, {"large": ["large", "big"] + (["bigger", "larger"] if pair else []),
                       "small": ["small", "little"] + (["smaller"] if pair else []),
                       "largest": ["largest", "biggest"],
                       "smallest": ["smallest"]}[size])


#: the plain forms of a category sentence in a chip ("the only {n}": the chip holds one), drawn
#: by :func:`pick` (the doubled form is drawn twice as often); also the forms of category negatives
CATEGORY_FORMS = ["the {n}", "the {n}", "the only {n}", "the {n} in the image"]


def make_expression(rng: np.random.Generator, sc: Scenario, cv: Canvas, scene: bool = False) -> str:
    cat, det = sc.category, sc.details
    noun = noun_word(rng, cat, cv if sc.type == "category" else None)
    regions = SCENE_REGION_PHRASES if scene else REGION_PHRASES
    if sc.type == "category":
        forms = CATEGORY_FORMS
        if scene:
            forms = ["the {n}", "the only {n}", "the {n} in the scene"]
        return pick(rng, forms).format(n=noun)
    if sc.type == "attribute":
        if det["attribute"] == "colour":
            c = colour_word(rng, det["colour"])
            forms = ["the {c} {n}", "the {c} {n}", "the {n} that is {c}", "{c} {n}"]
            if cat == "building":
                forms += ["the building with the {c} roof", "the {c} roofed building"]
            return pick(rng, forms).format(c=c, n=noun)
        if det["attribute"] == "size":
            z = size_word(rng, det["size"], pair=det.get("count") == 2)
            forms = ["the {z} {n}", "the {z} {n}"]
            if det["size"] in ("largest", "smallest"):
                forms.append("the {n} that is the {z}")
            return pick(rng, forms).format(z=z, n=noun)
        z = size_word(rng, det["size"])
        c = colour_word(rng, det["colour"])
        return pick(rng, ["the {z} {c} {n}", "the {z} {c} {n}", "the {c} {n} that is {z}"]
                     ).format(z=z, c=c, n=noun)
    if sc.type == "spatial-absolute":
        r = pick(rng, regions[det["region"]])
        forms = ["the {n} {r}", "the {n} {r}", "the {n} located {r}"]
        return pick(rng, forms).format(n=noun, r=r)
    if sc.type == "spatial-relative":
        rel = pick(rng, RELATION_PHRASES[det["relation"]])
        a = pick(rng, CATEGORY_WORDS[det["anchor"]])
        if det["relation"] == "on":
            return pick(rng, ["the {n} on the road", "the {n} driving on the road"]).format(n=noun)
        forms = ["the {n} {rel} the {a}", "the {n} {rel} the {a}", "the {n} that is {rel} the {a}"]
        return pick(rng, forms).format(n=noun, rel=rel, a=a)
    if sc.type == "combined":
        r = pick(rng, regions[det["region"]])
        if det["attribute"] == "colour":
            w = colour_word(rng, det["colour"])
        else:
            w = size_word(rng, det["size"])
        return pick(rng, ["the {w} {n} {r}", "the {w} {n} {r}", "the {w} {n} located {r}"]
                     ).format(w=w, n=noun, r=r)
    raise ValueError(sc.type)
