"""FIANet text decoupling: hand-checked masks for expressions from both datasets' vocabularies.

Each case lists the WordPieces (to make the positions readable), then the non-zero positions of
the object and position masks in upstream mode (NLTK word index + 1 used as token index) and in
aligned mode (the WordPieces of the matched words). ``ALL`` = the fallback to attention_mask.
Tags come from the pinned offline perceptron model (textblob-aptagger 0.2.0) and are asserted too,
because the phrase masks depend on them.
"""

from __future__ import annotations

import pytest
import torch

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.text import (
    DATASET_MAX_TOKENS,
    Decoupled,
    analyse,
    decouple,
    decouple_batch,
    get_tokenizer,
)

ALL = "ALL"

# (expression, classes, max_tokens, tags, wordpieces, obj, pos, aligned obj, aligned pos)
CASES = [
    # RRSIS-D list: "of the bridge" is a PP but contains "of" -> dropped; "on the left" kept.
    (
        "the vehicle on the left of the bridge", "rrsisd", 22,
        "DT NN IN DT NN IN DT NN",
        "[CLS] the vehicle on the left of the bridge [SEP]",
        [2, 8], [3, 4, 5], [2, 8], [3, 4, 5],
    ),
    # Same sentence, RefSegRS list: "bridge" is no RefSegRS class.
    (
        "the vehicle on the left of the bridge", "refsegrs", 20,
        "DT NN IN DT NN IN DT NN",
        "[CLS] the vehicle on the left of the bridge [SEP]",
        [2], [3, 4, 5], [2], [3, 4, 5],
    ),
    # bikeway -> bike ##way shifts "road" (word 5) to token 6 = "the"; "next to" is IN TO: no PP.
    (
        "the bikeway next to the road", "refsegrs", 20,
        "DT NN IN TO DT NN",
        "[CLS] the bike ##way next to the road [SEP]",
        [2, 6], ALL, [2, 3, 7], ALL,
    ),
    # impervious -> imp ##er ##vious: class at words 0-1 -> tokens 1-2; building (word 4) -> 5.
    (
        "impervious surface near the building", "refsegrs", 20,
        "JJ NN IN DT NN",
        "[CLS] imp ##er ##vious surface near the building [SEP]",
        [1, 2, 5], [3, 4, 5], [1, 2, 3, 4, 7], [5, 6, 7],
    ),
    # "car" matches inside "cars" (substring); NNS does not end a PP but "the road" (NN) does.
    (
        "cars on the road", "refsegrs", 20,
        "NNS IN DT NN",
        "[CLS] cars on the road [SEP]",
        [1, 4], [2, 3, 4], [1, 4], [2, 3, 4],
    ),
    # "low vegetation": first word *containing* "low" is "yellow" -> words 1-2 (upstream quirk).
    (
        "the yellow car near low vegetation", "refsegrs", 20,
        "DT JJ NN IN JJ NN",
        "[CLS] the yellow car near low vegetation [SEP]",
        [2, 3], [4, 5, 6], [2, 3], [4, 5, 6],
    ),
    # "road" and "road marking" both start at the first "road".
    (
        "the road marking on the road", "refsegrs", 20,
        "DT NN VBG IN DT NN",
        "[CLS] the road marking on the road [SEP]",
        [2, 3], [4, 5, 6], [2, 3], [4, 5, 6],
    ),
    # "tree" is also a substring of "street"; the first containing word is "street".
    (
        "the street with a tree", "refsegrs", 20,
        "DT NN IN DT NN",
        "[CLS] the street with a tree [SEP]",
        [2], [3, 4, 5], [2], [3, 4, 5],
    ),
    # Case-sensitive matching: "Vehicle" matches no class -> object mask all zero (no fallback).
    (
        "Vehicle on the left", "refsegrs", 20,
        "NNP IN DT NN",
        "[CLS] vehicle on the left [SEP]",
        [], [2, 3, 4], [], [2, 3, 4],
    ),
    # "on the roof" contains the substring "of" -> dropped -> position mask falls back.
    (
        "the car on the roof", "refsegrs", 20,
        "DT NN IN DT NN",
        "[CLS] the car on the roof [SEP]",
        [2], ALL, [2], ALL,
    ),
    (
        "the trailer behind the truck", "refsegrs", 20,
        "DT NN IN DT NN",
        "[CLS] the trailer behind the truck [SEP]",
        [2, 5], [3, 4, 5], [2, 5], [3, 4, 5],
    ),
    (
        "low vegetation along the sidewalk", "refsegrs", 20,
        "JJ NN IN DT NN",
        "[CLS] low vegetation along the sidewalk [SEP]",
        [1, 2, 5], [3, 4, 5], [1, 2, 5], [3, 4, 5],
    ),
    # overpass -> over ##pass: upstream marks "over" and puts "in the middle" on ##pass..the.
    (
        "the overpass in the middle", "rrsisd", 22,
        "DT NN IN DT NN",
        "[CLS] the over ##pass in the middle [SEP]",
        [2], [3, 4, 5], [2, 3], [4, 5, 6],
    ),
    # JJR counts as JJ.*: "on the lower left" = IN DT JJR NN.
    (
        "the storage tank on the lower left", "rrsisd", 22,
        "DT NN NN IN DT JJR NN",
        "[CLS] the storage tank on the lower left [SEP]",
        [2, 3], [4, 5, 6, 7], [2, 3], [4, 5, 6, 7],
    ),
    # "expressway" is one WordPiece; a three-word class.
    (
        "the expressway service area at the top", "rrsisd", 22,
        "DT NN NN NN IN DT NN",
        "[CLS] the expressway service area at the top [SEP]",
        [2, 3, 4], [5, 6, 7], [2, 3, 4], [5, 6, 7],
    ),
    # Two kept phrases; "on the left side" = IN DT JJ NN.
    (
        "the ship docked at the harbor on the left side", "rrsisd", 22,
        "DT NN VBD IN DT NN IN DT JJ NN",
        "[CLS] the ship docked at the harbor on the left side [SEP]",
        [2, 6], [4, 5, 6, 7, 8, 9, 10], [2, 6], [4, 5, 6, 7, 8, 9, 10],
    ),
    # Only PP is "of the tennis" (filtered); "to" is TO. Two two-word classes.
    (
        "the baseball field to the right of the tennis court", "rrsisd", 22,
        "DT NN NN TO DT NN IN DT NN NN",
        "[CLS] the baseball field to the right of the tennis court [SEP]",
        [2, 3, 9, 10], ALL, [2, 3, 9, 10], ALL,
    ),
    # JJ.* at most once: IN DT JJ JJ NN is not rule (a); rule (b) takes "in the bottom right".
    (
        "a windmill in the bottom right corner", "rrsisd", 22,
        "DT NN IN DT JJ JJ NN",
        "[CLS] a windmill in the bottom right corner [SEP]",
        [2], [3, 4, 5, 6], [2], [3, 4, 5, 6],
    ),
    (
        "the golf field beside the expressway toll station", "rrsisd", 22,
        "DT NN NN IN DT NN NN NN",
        "[CLS] the golf field beside the expressway toll station [SEP]",
        [2, 3, 6, 7, 8], [4, 5, 6], [2, 3, 6, 7, 8], [4, 5, 6],
    ),
    # "dam" is a substring of "damaged"; no PP at all -> fallback.
    (
        "the damaged bridge", "rrsisd", 22,
        "DT VBN NN",
        "[CLS] the damaged bridge [SEP]",
        [2, 3], ALL, [2, 3], ALL,
    ),
    # Upstream mode clips "on the left side" (tokens 7-10) to max_tokens = 8; [SEP] is cut.
    (
        "the ship docked at the harbor on the left side", "rrsisd", 8,
        "DT NN VBD IN DT NN IN DT JJ NN",
        "[CLS] the ship docked at the harbor on",
        [2, 6], [4, 5, 6, 7], [2, 6], [4, 5, 6, 7],
    ),
]


def _nonzero(t: torch.Tensor) -> list[int]:
    return [i for i, v in enumerate(t.tolist()) if v]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0][:40]}|{c[1]}|{c[2]}" for c in CASES])
def test_hand_checked_masks(case) -> None:
    expr, classes, n, tags, pieces, obj, pos, a_obj, a_pos = case
    assert " ".join(analyse(expr, classes).tags) == tags
    d = decouple(expr, classes, max_tokens=n)
    a = decouple(expr, classes, max_tokens=n, aligned=True)
    real = int(d.attention_mask.sum())
    tokens = get_tokenizer().convert_ids_to_tokens(d.input_ids[:real].tolist())
    assert " ".join(tokens) == pieces
    assert d.attention_mask.tolist() == [1] * real + [0] * (n - real)
    assert d.input_ids[real:].eq(0).all()
    for got, want in ((d, (obj, pos)), (a, (a_obj, a_pos))):
        assert torch.equal(got.input_ids, d.input_ids)
        assert torch.equal(got.attention_mask, d.attention_mask)
        assert _nonzero(got.object_mask) == want[0]
        if want[1] == ALL:
            assert torch.equal(got.position_mask, d.attention_mask)
        else:
            assert _nonzero(got.position_mask) == want[1]


def test_of_filter_keeps_other_phrase() -> None:
    a = analyse("the vehicle on the left of the bridge", "rrsisd")
    assert a.phrases == ("on the left", "of the bridge")
    assert a.kept_phrases == ("on the left",)
    assert a.position_spans == ((2, 3),)


def test_types_and_shapes() -> None:
    d = decouple("the car on the road")
    assert isinstance(d, Decoupled)
    for t in d:
        assert t.dtype == torch.long and t.shape == (20,)
    assert d.to("cpu").input_ids.device.type == "cpu"


def test_no_class_gives_all_zero_object_mask() -> None:
    d = decouple("the white roof in the middle", "refsegrs")
    assert int(d.object_mask.sum()) == 0
    assert _nonzero(d.position_mask) == [4, 5, 6]  # "in the middle" = words 3-5


def test_truncation_drops_sep_and_clips_aligned_masks() -> None:
    expr = (
        "the small white car parked on the impervious surface next to the bikeway near the "
        "large tree"
    )
    d = decouple(expr, "refsegrs", max_tokens=20)
    assert d.attention_mask.tolist() == [1] * 20
    assert 102 not in d.input_ids.tolist()  # [SEP] cut, as upstream
    # Upstream: car w3, imp.surf. w7-8, bikeway w12, tree w16 -> +1.
    assert _nonzero(d.object_mask) == [4, 8, 9, 13, 17]
    assert _nonzero(d.position_mask) == [6, 7, 8, 9, 14, 15, 16, 17]
    a = decouple(expr, "refsegrs", max_tokens=20, aligned=True)
    # "tree" would be token 20: gone; "near the large tree" keeps tokens 17-19.
    assert _nonzero(a.object_mask) == [4, 8, 9, 10, 11, 15, 16]
    assert _nonzero(a.position_mask) == [6, 7, 8, 9, 10, 11, 17, 18, 19]
    longer = decouple(expr, "refsegrs", max_tokens=30, aligned=True)
    assert _nonzero(longer.object_mask) == [4, 8, 9, 10, 11, 15, 16, 20]
    assert longer.input_ids.tolist()[21] == 102


def test_aligned_differs_from_upstream_only_after_split() -> None:
    plain = "the ship docked at the harbor on the left side"
    same = zip(decouple(plain, "rrsisd", 22), decouple(plain, "rrsisd", 22, aligned=True))
    assert all(torch.equal(x, y) for x, y in same)
    split = "the overpass in the middle"
    up, al = decouple(split, "rrsisd", 22), decouple(split, "rrsisd", 22, aligned=True)
    assert not torch.equal(up.object_mask, al.object_mask)
    assert not torch.equal(up.position_mask, al.position_mask)


def test_aligned_masks_stay_on_real_content_tokens() -> None:
    # NLTK splits "cannot" into two words but BERT keeps one piece: upstream positions can then
    # run onto [SEP]; aligned ones never do.
    expr = "the car that cannot move beside the road"
    u = decouple(expr, "refsegrs")
    # words: the car that can not move beside the road
    # tokens: [CLS] the car that cannot move beside the road [SEP]
    assert u.input_ids[9] == 102
    assert _nonzero(u.object_mask) == [2, 9]  # "road" = word 8 -> token 9 = [SEP]
    assert _nonzero(u.position_mask) == [7, 8, 9]
    a = decouple(expr, "refsegrs", aligned=True)
    assert _nonzero(a.object_mask) == [2, 8]
    assert _nonzero(a.position_mask) == [6, 7, 8]
    real = a.attention_mask.bool()
    content = real & (a.input_ids != 101) & (a.input_ids != 102)
    assert not (a.object_mask.bool() & ~content).any()
    assert not (a.position_mask.bool() & ~content).any()


def test_batch_shapes_and_rows_equal_single() -> None:
    exprs = ["the overpass in the middle", "the damaged bridge", "a windmill"]
    b = decouple_batch(exprs, "rrsisd", max_tokens=22)
    assert isinstance(b, Decoupled)
    for t in b:
        assert t.shape == (3, 22) and t.dtype == torch.long
    for i, e in enumerate(exprs):
        single = decouple(e, "rrsisd", max_tokens=22)
        for x, y in zip(b, single):
            assert torch.equal(x[i], y)


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_expression_is_bad_input(bad: str) -> None:
    with pytest.raises(BadInputError, match="expression is empty"):
        decouple(bad)
    with pytest.raises(BadInputError, match="expression is empty"):
        decouple_batch(["the car", bad])


def test_empty_batch_and_bad_options() -> None:
    with pytest.raises(BadInputError):
        decouple_batch([])
    with pytest.raises(UsageError, match="max_tokens"):
        decouple("the car", max_tokens=1)
    with pytest.raises(UsageError, match="unknown class list"):
        decouple("the car", classes="dior")


def test_user_classes_are_literal() -> None:
    # A user phrase with regex characters is matched literally, never as a pattern.
    d = decouple("a solar panel (small) near the pool", ["panel (small)", "pool", "c.r"])
    a = analyse("a solar panel (small) near the pool", ["panel (small)", "pool", "c.r"])
    assert a.matched_classes == ("panel (small)", "pool")
    assert a.words[:4] == ("a", "solar", "panel", "(")
    # panel (small) -> words 2-5 (panel ( small )) -> tokens 3-6; pool = word 8 -> token 9.
    assert _nonzero(d.object_mask) == [3, 4, 5, 6, 9]


def test_dataset_token_budgets() -> None:
    assert DATASET_MAX_TOKENS == {"refsegrs": 20, "rrsisd": 22}
