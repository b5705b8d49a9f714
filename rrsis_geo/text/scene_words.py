"""The scene language: what a sentence says about the whole scene, read with word tables and
regular expressions (no model).

- :func:`tile_expression` — the sentence the *tile* passes read, without its scene-frame words
  ("the blue tennis court in the east of the scene" → "the blue tennis court").
- :func:`parse_scene_query` — absolute positions ("in the north-east of the scene", "on the left",
  "in the middle") and superlatives ("the largest", "the smallest") as a :class:`SceneQuery`;
  relational uses ("left of the truck") are not positions.
- :func:`parse_relation` — a relational phrase whose anchor is a class of the model ("the truck
  near the tennis court") as a :class:`Relation`.
- :func:`named_class`, :func:`rival_classes`, :func:`check_prompts` — the class the sentence names
  (also through :data:`CLASS_SYNONYMS`), the classes it is checked against, and the prompts of
  the class check.
- :func:`referent_min_area` — the smallest plausible area of the referent (:data:`CLASS_MIN_M2`).

:mod:`rrsis_geo.inference.scene` judges these words on the whole raster; the scores they feed are
in :mod:`rrsis_geo.inference.scoring`. ``tests/test_synth_language.py`` keeps this vocabulary in
step with the phrases the synthetic-data generator writes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from rrsis_geo.text.classes import normalize_phrase, plural

#: m²; smaller components are fragments, when the sentence names no class of
#: :data:`CLASS_MIN_M2` (a car, the smallest common referent, is ~4.5 x 1.8 m)
MIN_OBJECT_M2 = 8.0
#: m²; the smallest plausible size of a referent of these classes (conservative: about a third
#: of a standard court, a small house, a compact car). A component smaller than that is a piece
#: of something, whatever its probability.
CLASS_MIN_M2 = {
    "basketball court": 100.0, "tennis court": 100.0, "baseball field": 300.0,
    "ground track field": 1000.0, "stadium": 1000.0, "golf field": 2000.0,
    "airport": 5000.0, "train station": 300.0, "harbor": 300.0,
    "expressway service area": 1000.0, "expressway toll station": 100.0,
    "storage tank": 10.0, "tank": 10.0, "pond": 20.0, "water body": 20.0, "building": 20.0,
    "airplane": 30.0, "ship": 10.0, "bridge": 30.0, "dam": 30.0, "overpass": 30.0,
    "car": 4.0, "vehicle": 4.0, "van": 5.0, "truck": 8.0, "bus": 15.0, "trailer": 6.0,
}
#: m²; the typical footprint of vehicle kinds seen from above, from their real dimensions: a car
#: 4.5 x 1.8 m, a van 5.5 x 2.0 m, a truck (in remote-sensing datasets a "large vehicle": box
#: truck 7.5 x 2.4 m to articulated lorry 16.5 x 2.55 m, geometric middle) and a city bus
#: 12 x 2.55 m (articulated 18 m). These kinds differ from above mainly by size, and a model that
#: takes one for another (a car for "the truck") is overruled by the size of what it found
#: (:func:`rrsis_geo.inference.scoring.size_margin`)
VEHICLE_TYPICAL_M2 = {"car": 8.1, "van": 11.0, "truck": 25.0, "bus": 32.0}
#: length / width of the same vehicle kinds (a truck: box truck 3.1 to articulated lorry 6.5,
#: geometric middle); anything else of their size — a small building, a tank, a crown — is
#: about as wide as long (:data:`NOT_ELONGATED`). See
#: :func:`rrsis_geo.inference.scoring.shape_margin`
VEHICLE_ELONGATION = {"car": 2.5, "van": 2.7, "truck": 4.5, "bus": 4.7}
NOT_ELONGATED = 1.0
#: other words for a class of the model's list (the generated scenes say "tank" and "water
#: body")
CLASS_SYNONYMS = {"tank": "storage tank", "water body": "pond", "oil tank": "storage tank",
                  "plane": "airplane", "aircraft": "airplane", "boat": "ship",
                  "house": "building", "lake": "pond"}
#: a class and its kinds are not rivals (a car is a vehicle; "the vehicle" may be a bus), kinds
#: of one class are (a car is not a truck)
CLASS_KINDS = {"vehicle": {"car", "van", "truck", "trailer", "bus"},
               "impervious surface": {"road", "road marking", "bikeway", "sidewalk"},
               "road": {"road marking"}}

_DIRS = {
    "north": (0.0, -1.0), "northern": (0.0, -1.0), "upper": (0.0, -1.0), "top": (0.0, -1.0),
    "south": (0.0, 1.0), "southern": (0.0, 1.0), "lower": (0.0, 1.0), "bottom": (0.0, 1.0),
    "east": (1.0, 0.0), "eastern": (1.0, 0.0), "right": (1.0, 0.0),
    "west": (-1.0, 0.0), "western": (-1.0, 0.0), "left": (-1.0, 0.0),
}
_CENTRE = {"middle", "centre", "center", "central"}
_LARGEST = {"largest", "biggest", "widest", "longest"}
_SMALLEST = {"smallest", "tiniest", "shortest"}
_FRAME_NOUNS = {"scene", "image", "picture", "map", "area", "raster", "photo", "mosaic", "view"}


def _alternation(words) -> str:
    """``(?:a|b|...)`` of literal words, longest first."""
    return "(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + ")"


_CLASS_RE = re.compile(r"\b(" + _alternation(CLASS_MIN_M2) + r")(?:e?s)?\b")


def referent_min_area(expression: str) -> float:
    """Smallest plausible area (m²) of the referent: :data:`CLASS_MIN_M2` of the first class
    word in the sentence (the referent comes before any anchor: "the car near the building"),
    else :data:`MIN_OBJECT_M2`.

    >>> referent_min_area("the blue basketball court near the pond")
    100.0
    >>> referent_min_area("the red thing")
    8.0
    """
    m = _CLASS_RE.search(expression.lower())
    return CLASS_MIN_M2[m.group(1)] if m else MIN_OBJECT_M2


def named_class(expression: str, classes) -> str | None:
    """The class of the model's list the sentence names first (the referent comes before any
    anchor), also through :data:`CLASS_SYNONYMS`; None if it names none of them.

    >>> named_class("the grey tank near the pond", ["pond", "storage tank", "building"])
    'storage tank'
    >>> named_class("the red thing", ["building"]) is None
    True
    """
    classes = [c.lower() for c in classes or ()]
    words = {c: c for c in classes}
    words.update({w: c for w, c in CLASS_SYNONYMS.items() if c in classes and w not in words})
    if not words:
        return None
    m = re.search(r"\b(" + _alternation(words) + r")(?:e?s)?\b", expression.lower())
    return words[m.group(1)] if m else None


def rival_classes(named: str, classes) -> list[str]:
    """The classes a candidate of class ``named`` is checked against: every other class of the
    model's list except its wider and narrower classes in :data:`CLASS_KINDS`."""
    related = set(CLASS_KINDS.get(named, ())) | {k for k, v in CLASS_KINDS.items() if named in v}
    return [c for c in dict.fromkeys(x.lower() for x in classes or ())
            if c != named and c not in related]


def class_was_trained(named: str, trained) -> bool:
    """Whether a model trained to find the classes ``trained`` (its ``trained_classes``
    metadata) can find ``named``: the class itself (or a synonym of it), a narrower kind of it
    ("the vehicle": it learned cars) or a wider class ("the truck": it learned vehicles).

    >>> class_was_trained("storage tank", ["tank", "tree"]), class_was_trained("vehicle", ["car"])
    (True, True)
    >>> class_was_trained("truck", ["vehicle"]), class_was_trained("bridge", ["road", "car"])
    (True, False)
    """
    known = {CLASS_SYNONYMS.get(c, c) for c in map(normalize_phrase, trained)}
    return (named in known or bool(CLASS_KINDS.get(named, set()) & known)
            or any(named in CLASS_KINDS.get(w, ()) for w in known))


def check_prompts(names: list[str], mode: str) -> list[str]:
    """The class check's prompts, named class first: "the tree" in ``--mode single``, "the
    trees" in ``--mode all``. A check window around one of many matches (a crown in a stand of
    trees) holds several of them; asked in the singular, a referring model picks one of them and
    scores the rest as background, so every candidate but one failed the check.

    >>> check_prompts(["tree", "bus", "low vegetation"], "all")
    ['the trees', 'the buses', 'the low vegetations']
    >>> check_prompts(["tree", "bus"], "single")
    ['the tree', 'the bus']
    """
    if mode == "all":
        return [f"the {plural(c)}" for c in names]
    return [f"the {c}" for c in names]


@dataclass
class Relation:
    """A relational phrase: the referent is ``direction`` of (or, if None, near) the anchor."""

    anchor: str  # the anchor's class (of the model's list)
    direction: tuple[float, float] | None  # (dx, dy), y down: "left of" = (-1, 0)
    phrase: str
    #: the sentence without the relational clause ("the bus that is next to the pond" -> "the bus")
    referent_text: str = ""


_RELATIONS = (
    (r"(?:to the |on the )?left of|west of|to the west of", (-1.0, 0.0)),
    (r"(?:to the |on the )?right of|east of|to the east of", (1.0, 0.0)),
    (r"above|(?:to the )?north of", (0.0, -1.0)),
    (r"below|under|(?:to the )?south of", (0.0, 1.0)),
    (r"next to|beside|near|close to|nearby|adjacent to|by", None),
)
_RELATION_RE = re.compile(r"(?:\s*,?\s+(?:(?:that|which)\s+(?:is|are)|located|situated|"
                          r"standing|parked|lying))?\s+(" + "|".join(f"(?:{p})" for p, _ in _RELATIONS)
                          + r")\s+(?:the|a|an)\s+([a-z][a-z -]*)")


def parse_relation(expression: str, classes) -> Relation | None:
    """The first relational phrase whose anchor is a class of the model's list (frame words such
    as "north of the scene" are positions, not relations).

    >>> parse_relation("the truck near the tennis court", ["truck", "tennis court"]).anchor
    'tennis court'
    >>> parse_relation("the car to the left of the bus", ["car", "bus"]).direction
    (-1.0, 0.0)
    """
    text = normalize_phrase(expression)
    for m in _RELATION_RE.finditer(text):
        anchor = named_class(m.group(2), classes)
        if anchor is None:
            continue
        phrase = m.group(1)
        direction = next(d for p, d in _RELATIONS if re.fullmatch(p, phrase))
        return Relation(anchor, direction, phrase, (text[:m.start()] + text[m.end():]).strip())
    return None


@dataclass
class SceneQuery:
    """Scene-frame language found in a sentence."""

    direction: tuple[float, float] | None = None  # (dx, dy), y down (north = -1)
    centre: bool = False
    superlative: str | None = None  # "largest" | "smallest"
    words: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.direction is None and not self.centre and self.superlative is None


def parse_scene_query(expression: str) -> SceneQuery:
    """Absolute position words and superlatives of a sentence (relational uses are skipped).

    >>> parse_scene_query("the tank in the north-east of the scene").direction
    (0.7071067811865475, -0.7071067811865475)
    >>> parse_scene_query("the car left of the truck").empty
    True
    >>> parse_scene_query("the car on the left of the scene").direction
    (-1.0, 0.0)
    """
    words = re.findall(r"[a-z]+", expression.lower())
    q = SceneQuery()
    dx = dy = 0.0
    for i, w in enumerate(words):
        nxt = words[i + 1:i + 4]
        relational = False
        if nxt[:1] == ["of"]:
            # "left of the truck" is a relation; "on the left of the scene" a position
            rest = [x for x in nxt[1:] if x != "the"]
            relational = not (rest and rest[0] in _FRAME_NOUNS)
        if w in _DIRS and not relational:
            ddx, ddy = _DIRS[w]
            dx, dy = dx + ddx, dy + ddy
            q.words.append(w)
        elif w in _CENTRE and not relational:
            q.centre = True
            q.words.append(w)
        elif w in _LARGEST:
            q.superlative = "largest"
            q.words.append(w)
        elif w in _SMALLEST:
            q.superlative = "smallest"
            q.words.append(w)
    n = math.hypot(dx, dy)
    if n > 0:
        q.direction = (dx / n, dy / n)
    return q


# the words parse_scene_query reads as absolute positions, plus "far" ("in the far north")
_DIR_WORD = _alternation(set(_DIRS) | _CENTRE | {"far"})
_PART_WORD = _alternation(("part", "side", "corner", "edge", "half", "area", "region", "portion"))
_FRAME_WORD = _alternation(_FRAME_NOUNS)
#: an absolute position phrase: "(located) in the north-east (part) (of the scene)"
_POSITION_PHRASE = re.compile(
    r"\b(?:(?:located|situated|lying|which\s+is|that\s+is|that's)\s+)?"
    r"(?:in|at|on|to|towards?)\s+the\s+" + _DIR_WORD + r"(?:[\s-]+" + _DIR_WORD + r")*"
    r"(?:\s+" + _PART_WORD + r")?"
    r"(?:\s+of\s+the\s+" + _FRAME_WORD + r")?\b"
    r"(?![\s-]+(?:of|" + _DIR_WORD + "|" + _PART_WORD + r")\b)")
#: "in the scene", "of the image": the frame itself
_FRAME_PHRASE = re.compile(r"\b(?:in|of|within|across)\s+the\s+(?:whole\s+|entire\s+)?"
                           + _FRAME_WORD + r"\b")
_SUPERLATIVE = _alternation(_LARGEST | _SMALLEST)
_SUPERLATIVE_PHRASE = re.compile(r"\b(?:(?:which|that)\s+is\s+the\s+" + _SUPERLATIVE
                                 + r"(?:\s+one)?|" + _SUPERLATIVE + r")\b")


def tile_expression(expression: str) -> str:
    """The sentence the *tile* passes see: scene-frame words removed.

    A tile is not the scene: "in the north-east of the scene" and "the largest" describe where
    and how big the referent is among *all* candidates, which only :func:`language_agreement`
    can judge. Given to a tile, the model would read them in its chip frame (each tile its own
    north-east, its own largest) and suppress the referent in most tiles. Relational phrases
    ("left of the truck") stay: both objects are in the same tile. If nothing but an article
    would remain, the sentence is returned unchanged.

    >>> tile_expression("the blue tennis court located in the east of the scene")
    'the blue tennis court'
    >>> tile_expression("the storage tank that is the biggest")
    'the storage tank'
    >>> tile_expression("the car to the left of the truck")
    'the car to the left of the truck'
    """
    text = " ".join(expression.split())
    out = _POSITION_PHRASE.sub(" ", text)
    out = _FRAME_PHRASE.sub(" ", out)
    out = _SUPERLATIVE_PHRASE.sub(" ", out)
    out = " ".join(out.split()).strip(" ,")
    if not re.sub(r"\b(?:the|a|an)\b", "", out).strip():
        return text
    return out
