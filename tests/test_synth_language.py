"""The generator's position and relation phrases are read by the scene language.

The synthetic generator (:mod:`rrsis_geo.data.synth`) writes the sentences the shipped model
learns from; the scene pass (:mod:`rrsis_geo.text.scene_words`) reads positions ("in the north-east
of the scene") and relations ("left of the pond") out of a user's sentence with its own word
lists. These tests keep the two vocabularies in step: every phrase of the generator's tables, in
every template it writes them in, and the sentences of generated chips, must parse to the region
or relation the generator meant.
"""

from __future__ import annotations

import math

import pytest

from rrsis_geo.data.synth.chips import generate_chip
from rrsis_geo.data.synth.vocabulary import (
    CATEGORIES,
    CATEGORY_WORDS,
    REGION_PHRASES,
    RELATION_ANCHORS,
    RELATION_PHRASES,
    SCENE_REGION_PHRASES,
)
from rrsis_geo.text.scene_words import parse_relation, parse_scene_query

# the generator's region names as (dx, dy) directions, y down (north = -1); "center" has none
_REGION_DIRECTION = {
    "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1),
    "upper left": (-1, -1), "upper right": (1, -1), "lower left": (-1, 1), "lower right": (1, 1),
}
_RELATION_DIRECTION = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1),
                       "near": None}
# phrases the scene language does not read yet (strict: fixing one makes its case fail here,
# so the mark is removed with the fix)
_NOT_READ: dict[str, str] = {}  # phrases the scene language does not read yet (strict xfail)


def _unit(d):
    n = math.hypot(*d)
    return (d[0] / n, d[1] / n)


def _check_position(sentence: str, region: str) -> None:
    q = parse_scene_query(sentence)
    if region == "center":
        assert q.centre and q.direction is None, (sentence, q)
    else:
        assert q.direction == pytest.approx(_unit(_REGION_DIRECTION[region])), (sentence, q)
    # a position is not mistaken for a relation to an object
    assert parse_relation(sentence, CATEGORIES) is None, sentence


def _check_relation(sentence: str, relation: str, anchor: str) -> None:
    r = parse_relation(sentence, CATEGORIES)
    assert r is not None and r.anchor == anchor, (sentence, r)
    want = _RELATION_DIRECTION[relation]
    assert r.direction == (None if want is None else pytest.approx(want)), (sentence, r)
    # a relation to an object is not read as a position in the frame
    assert parse_scene_query(sentence).empty, (sentence, parse_scene_query(sentence))


def _marked(phrase: str, *args):
    if phrase in _NOT_READ:
        return pytest.param(phrase, *args, marks=pytest.mark.xfail(strict=True,
                                                                  reason=_NOT_READ[phrase]))
    return pytest.param(phrase, *args)


_POSITIONS = [_marked(p, region) for table in (REGION_PHRASES, SCENE_REGION_PHRASES)
              for region, phrases in table.items() for p in phrases]


def test_region_tables_cover_every_region():
    assert set(REGION_PHRASES) == set(SCENE_REGION_PHRASES) == set(_REGION_DIRECTION) | {"center"}


@pytest.mark.parametrize(("phrase", "region"), _POSITIONS)
def test_every_position_phrase_is_read_as_its_region(phrase, region):
    # the templates the generator writes positions in (plain, "located", with an attribute)
    for template in ("the building {r}", "the building located {r}", "the large red car {r}"):
        _check_position(template.format(r=phrase), region)


@pytest.mark.parametrize("relation", sorted(RELATION_PHRASES))
def test_every_relation_phrase_is_read_with_its_anchor(relation):
    if relation == "on":
        # "the car (driving) on the road": the scene language has no "on" relation; it must at
        # least not be read as a position or as another relation
        for s in ("the car on the road", "the car driving on the road"):
            assert parse_relation(s, CATEGORIES) is None and parse_scene_query(s).empty, s
        return
    for phrase in RELATION_PHRASES[relation]:
        for referent, anchors in RELATION_ANCHORS.items():
            for anchor in anchors:
                for word in CATEGORY_WORDS[anchor]:
                    for template in ("the {n} {rel} the {a}", "the {n} that is {rel} the {a}"):
                        s = template.format(n=CATEGORY_WORDS[referent][0], rel=phrase, a=word)
                        _check_relation(s, relation, anchor)


@pytest.mark.parametrize("etype", ["spatial-absolute", "combined", "spatial-relative"])
def test_generated_chip_sentences_parse_to_their_details(etype):
    n_checked = 0
    for seed in range(60):
        chip = generate_chip(seed, 192, etype=etype)
        d = chip.details
        if etype == "spatial-relative":
            if d["relation"] == "on":
                continue  # see test_every_relation_phrase_is_read_with_its_anchor
            _check_relation(chip.expression, d["relation"], d["anchor"])
        else:
            _check_position(chip.expression, d["region"])
        n_checked += 1
    assert n_checked >= 30
