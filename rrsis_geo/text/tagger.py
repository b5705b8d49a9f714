"""Offline word tokenisation and part-of-speech tagging for FIANet's spatial-phrase mask.

Upstream FIANet calls ``nltk.word_tokenize`` and ``nltk.pos_tag``; both need NLTK data packages
(``punkt`` and ``averaged_perceptron_tagger``) that are downloaded at run time and that no package
registry ships. This module gets as close as possible without them.

Words
    ``nltk.word_tokenize`` = Punkt sentence split, then the Treebank-style ``NLTKWordTokenizer`` on
    each sentence. When no ``.``, ``?`` or ``!`` occurs before the end of the text (nearly every
    referring expression) the sentence split is a no-op and we call ``NLTKWordTokenizer`` directly,
    which then gives identical words. Otherwise a data-free ``PunktSentenceTokenizer`` with a few
    common abbreviations (Mr., St., U.S., ...) splits the text first. Checked against NLTK's
    trained English Punkt model: same words for ordinary sentence breaks ("the car. it is red")
    and for those abbreviations; it still differs on abbreviations English Punkt knows and we do
    not, and English Punkt itself splits "e.g." and "no." as sentence ends.

Tags (default backend, ``textblob``)
    NLTK's own ``PerceptronTagger`` code (``load=False``) with the averaged-perceptron model
    that the PyPI package ``textblob-aptagger`` 0.2.0 ships (``trontagger-0.1.0.pickle``, MIT):
    the same algorithm and feature templates as NLTK's model, trained by the same author on
    other data, so the weights and the tag dictionary differ. The package itself is never
    imported (its ``__init__`` needs the removed ``textblob.packages``); the pickle is located
    with ``importlib.util.find_spec`` and read once, lazily (about 0.15 s).

Measured difference to NLTK's own tagger
    Reference: NLTK's 2015 ``averaged_perceptron_tagger`` model (what upstream's Python 3.7 /
    NLTK <= 3.8.1 loads; NLTK >= 3.9's ``_eng`` JSON is, as far as we know, the same model).
    On 3,000 random template expressions built from both datasets' class names, colours, sizes, 22
    prepositions and 22 image positions ("at the top left corner", "on the far right"): 95.9 % of
    word tags agree, 71 % of expressions get identical tag sequences, and the kept spatial phrases,
    hence the position masks, are identical for 94.2 % (an earlier measurement on 2,965 such
    expressions: 96.8 % / 94.6 %). Object masks do not depend on tags (100 %). Typical differences:
    ``left`` NN vs VBD and ``right`` JJ vs NN after ``top``/``upper``/``bottom`` ("at the top left
    corner": NLTK chunks "at the top left", we chunk "at the top"), colour words (``dark``,
    ``blue``, ``red``) JJ vs NN, ``rectangular`` JJ vs NN, ``marking`` VBG vs NN, ``expressway``
    RB/JJ vs NN, ``parked``/``located``/``situated`` VBN vs VBD, ``all`` PDT vs DT. Most of NLTK's
    choices on these words depend on the following words too, so no small word-level override table
    fixes them; we ship none.

Exact NLTK (opt-in backend, ``nltk``)
    Set the environment variable ``RRSIS_GEO_POS_TAGGER=nltk`` to use NLTK's own tagger and
    sentence splitter from NLTK data already installed on the machine
    (``averaged_perceptron_tagger_eng``, and ``punkt_tab`` if present). Nothing is downloaded:
    missing data raises :class:`~rrsis_geo.errors.WeightsError`. The backend is read once per
    process; masks then match upstream exactly (given the same NLTK model).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rrsis_geo.errors import UsageError, WeightsError

if TYPE_CHECKING:
    from nltk.tag import PerceptronTagger

TAGGER_PACKAGE = "textblob-aptagger"
TAGGER_MODULE = "textblob_aptagger"
TAGGER_PICKLE = "trontagger-0.1.0.pickle"
#: Environment variable choosing the tagger backend: "textblob" (default) or "nltk".
BACKEND_ENV = "RRSIS_GEO_POS_TAGGER"
BACKENDS = ("textblob", "nltk")
_NLTK_HINT = (
    "install NLTK's data first, e.g. python -m nltk.downloader averaged_perceptron_tagger_eng "
    f"punkt_tab, or unset {BACKEND_ENV}"
)

# Common abbreviations that English Punkt does not treat as sentence ends (lower case, no final
# period). Enough for place names ("St.", "Ave.") and titles in referring expressions.
_ABBREVIATIONS = frozenset("mr mrs ms dr st jr sr vs ave ft inc co ltd u.s u.k".split())
# A sentence-final mark followed by more text: only then can sentence splitting change the words.
_INNER_SENTENCE_END = re.compile(r"[.?!]\s*\S")


@functools.cache
def _word_tokenizer():  # -> nltk.tokenize.NLTKWordTokenizer
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.cache
def backend() -> str:
    """The POS backend of this process, read once from ``RRSIS_GEO_POS_TAGGER``.

    Raises:
        UsageError: the variable names no known backend.
    """
    name = os.environ.get(BACKEND_ENV, "textblob").strip().lower() or "textblob"
    if name not in BACKENDS:
        raise UsageError(f"{BACKEND_ENV}={name!r} is not one of {', '.join(BACKENDS)}")
    return name


@functools.cache
def _sentence_splitter():  # -> a Punkt sentence tokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    if backend() == "nltk":
        from nltk.tokenize import PunktTokenizer

        try:
            return PunktTokenizer("english")  # trained English model, as nltk.word_tokenize
        except LookupError:
            pass  # punkt_tab absent: the data-free splitter below is the documented fallback
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
    """NLTK's ``PerceptronTagger`` with the backend's model; built once per process.

    The default backend carries the textblob-aptagger model; ``RRSIS_GEO_POS_TAGGER=nltk`` loads
    NLTK's own model from local NLTK data.

    Raises:
        WeightsError: the model file is missing or not the expected ``(weights, tagdict, classes)``.
    """
    from nltk.tag import PerceptronTagger

    if backend() == "nltk":
        try:
            return PerceptronTagger()  # NLTK's own model from local NLTK data
        except LookupError as exc:
            raise WeightsError(f"NLTK's tagger data is not installed: {_NLTK_HINT}") from exc
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
