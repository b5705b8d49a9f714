"""FIANet text decoupling: WordPiece ids plus context, ground-object and spatial-position masks.

Reimplements upstream's ``data/*_refer_bert.py`` from its description (docs/fianet.md
§Text decoupling):

1. ``input_ids``: bert-base-uncased WordPiece ids ``[CLS] ... [SEP]``, cut to ``max_tokens``
   (which can drop ``[SEP]``), zero-padded; ``attention_mask`` is 1 on the kept tokens.
2. ``object_mask``: for every class phrase found in the expression as a *case-sensitive substring*
   ("car" matches "cars" and "card", "Vehicle" does not match "vehicle"), take the first word that
   *contains* the phrase's first word ("low vegetation" → "yellow" if that comes first) and mark
   as many positions as the phrase has words. No fallback: no class → all zeros.
3. ``position_mask``: POS-tag the words, chunk prepositional phrases with three tag patterns
   (``IN DT? JJ*? NN``, ``IN DT? JJ*? JJ``, ``IN DT? JJ* VBD``; ``JJ*`` = one tag starting with
   JJ), drop every phrase whose text contains the substring "of" (also "roof", "off"), mark each
   remaining phrase from the first word *equal* to its first word. Fallback: if nothing is
   marked, the mask equals ``attention_mask``.

Upstream mode (default, ``aligned=False``) writes a phrase that starts at NLTK word ``i`` to
WordPiece positions ``i+1 ... i+n`` — the word index is used as a token index, so every sub-word
split earlier in the sentence ("bikeway" → ``bike ##way``) shifts the mask off its words. The
official weights were trained with these positions, so this is the faithful choice. Masks are
clipped to ``max_tokens`` and may cover ``[SEP]`` or padding, as upstream's do.

``aligned=True`` maps each NLTK word to the WordPieces that overlap it (by character offsets)
and marks exactly those, never ``[CLS]``, ``[SEP]``, padding or truncated tokens. This is the
intended behaviour, but out of distribution for the official weights. Which words are chosen
(including upstream's substring quirks) is the same in both modes; only the placement differs.

Verified outside the repository: with NLTK's own tagger model (``RRSIS_GEO_POS_TAGGER=nltk``)
all four tensors equal a literal re-run of upstream's per-sentence logic on 3,004 expressions.
With the default offline tagger, tags differ from NLTK's on some words (see
:mod:`rrsis_geo.text.tagger`), which changes the position mask for about 6 % of expressions.

Class phrases are matched literally (``re.escape``): identical to upstream for the built-in lists,
and safe for user phrases containing regex characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.text import tagger as _tagger
from rrsis_geo.text.classes import resolve_classes
from rrsis_geo.text.tokenizer import get_tokenizer

#: Chunk grammar of upstream's position mask: one label, three alternative rules applied in order.
PP_GRAMMAR = r"""
PP: {<IN><DT>?<JJ.*>?<NN>}
    {<IN><DT>?<JJ.*>?<JJ>}
    {<IN><DT>?<JJ.*><VBD>}
"""

ClassSpec = str | Iterable[str]


class Decoupled(NamedTuple):
    """The four text tensors FIANet takes, ``[N]`` for one expression or ``[B, N]`` for a batch.

    Attributes:
        input_ids: WordPiece ids, int64, 0 = padding.
        attention_mask: 1 on real tokens (incl. ``[CLS]``/``[SEP]``), int64.
        object_mask: ground-object mask, int64 0/1 (may be all zero).
        position_mask: spatial-position mask, int64 0/1 (never all zero: falls back to
            ``attention_mask``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    object_mask: torch.Tensor
    position_mask: torch.Tensor

    def to(self, device: torch.device | str) -> Decoupled:
        """The same tensors on ``device``."""
        return Decoupled(*(t.to(device) for t in self))


@dataclass(frozen=True)
class Analysis:
    """Word-level result of decoupling, before placement into token positions.

    Attributes:
        words: NLTK-style words of the expression.
        tags: one Penn-Treebank tag per word.
        object_spans: ``(first_word, n_words)`` per matched class phrase.
        matched_classes: the class phrases found, in class-list order.
        phrases: every PP chunk's text, in sentence order.
        kept_phrases: the chunks surviving the "of" filter.
        position_spans: ``(first_word, n_words)`` per kept chunk.
    """

    words: tuple[str, ...]
    tags: tuple[str, ...]
    object_spans: tuple[tuple[int, int], ...]
    matched_classes: tuple[str, ...]
    phrases: tuple[str, ...]
    kept_phrases: tuple[str, ...]
    position_spans: tuple[tuple[int, int], ...]


@functools.cache
def _chunker():  # -> nltk.RegexpParser; compiled once
    import nltk

    return nltk.RegexpParser(PP_GRAMMAR)


def _check_expression(expression: object) -> str:
    if not isinstance(expression, str):
        raise BadInputError(f"expression must be a string, got {type(expression).__name__}")
    if not expression.strip():
        raise BadInputError("expression is empty")
    return expression


def _first_index(words: Sequence[str], match) -> int:
    """Index of the first word satisfying ``match``; 0 when none does (as upstream)."""
    for i, word in enumerate(words):
        if match(word):
            return i
    return 0


@functools.lru_cache(maxsize=8192)
def _analyse(expression: str, classes: tuple[str, ...]) -> Analysis:
    words = _tagger.word_tokenize(expression)

    object_spans: list[tuple[int, int]] = []
    matched: list[str] = []
    for phrase in classes:
        if not re.search(re.escape(phrase), expression):
            continue
        phrase_words = _tagger.word_tokenize(phrase)
        if not phrase_words:
            continue
        head = phrase_words[0]
        object_spans.append((_first_index(words, lambda w, h=head: h in w), len(phrase_words)))
        matched.append(phrase)

    tagged = _tagger.pos_tag(words)
    tree = _chunker().parse(tagged) if tagged else None
    phrases: list[str] = []
    if tree is not None:
        for subtree in tree.subtrees(filter=lambda t: t.label() == "PP"):
            phrases.append(" ".join(word for word, _ in subtree.leaves()))
    kept = [p for p in phrases if "of" not in p]
    position_spans: list[tuple[int, int]] = []
    for phrase in kept:
        phrase_words = _tagger.word_tokenize(phrase)
        head = phrase_words[0]
        position_spans.append((_first_index(words, lambda w, h=head: w == h), len(phrase_words)))

    return Analysis(
        words=tuple(words),
        tags=tuple(tag for _, tag in tagged),
        object_spans=tuple(object_spans),
        matched_classes=tuple(matched),
        phrases=tuple(phrases),
        kept_phrases=tuple(kept),
        position_spans=tuple(position_spans),
    )


def analyse(expression: str, classes: ClassSpec = "refsegrs") -> Analysis:
    """Words, tags, matched classes and spatial phrases of one expression (for inspection).

    Args:
        expression: the referring expression.
        classes: ``"refsegrs"``, ``"rrsisd"``, ``"all"`` or a list of class phrases.

    Raises:
        BadInputError: empty expression.
        UsageError: unknown class list.
    """
    return _analyse(_check_expression(expression), resolve_classes(classes))


@functools.lru_cache(maxsize=8192)
def _word_pieces(expression: str) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """WordPiece ids (with specials, untruncated) and, per NLTK word, its piece positions."""
    enc = get_tokenizer()(expression, add_special_tokens=True, return_offsets_mapping=True)
    ids = tuple(int(i) for i in enc["input_ids"])
    offsets = enc["offset_mapping"]
    special = set(get_tokenizer().all_special_ids)
    pieces: list[tuple[int, ...]] = []
    for start, end in _tagger.word_spans(expression):
        pieces.append(
            tuple(
                p
                for p, (s, e) in enumerate(offsets)
                if ids[p] not in special and e > s and s < end and e > start
            )
        )
    return ids, tuple(pieces)


def _place_upstream(spans: Iterable[tuple[int, int]], max_tokens: int) -> list[int]:
    mask = [0] * max_tokens
    for first, n in spans:
        # Word index used as token index, +1 for [CLS]; upstream's slice could grow the list,
        # we clip to max_tokens instead.
        for pos in range(first + 1, min(first + 1 + n, max_tokens)):
            mask[pos] = 1
    return mask


def _place_aligned(
    spans: Iterable[tuple[int, int]], pieces: Sequence[Sequence[int]], n_kept: int, max_tokens: int
) -> list[int]:
    mask = [0] * max_tokens
    for first, n in spans:
        for word in range(first, min(first + n, len(pieces))):
            for pos in pieces[word]:
                if pos < n_kept:
                    mask[pos] = 1
    return mask


def _decouple_lists(
    expression: str, classes: tuple[str, ...], max_tokens: int, aligned: bool
) -> tuple[list[int], list[int], list[int], list[int]]:
    analysis = _analyse(expression, classes)
    all_ids, pieces = _word_pieces(expression)
    kept_ids = all_ids[:max_tokens]  # upstream truncation: may cut [SEP]
    n_kept = len(kept_ids)
    input_ids = list(kept_ids) + [0] * (max_tokens - n_kept)
    attention = [1] * n_kept + [0] * (max_tokens - n_kept)
    if aligned:
        obj = _place_aligned(analysis.object_spans, pieces, n_kept, max_tokens)
        pos = _place_aligned(analysis.position_spans, pieces, n_kept, max_tokens)
    else:
        obj = _place_upstream(analysis.object_spans, max_tokens)
        pos = _place_upstream(analysis.position_spans, max_tokens)
    if not any(pos):
        pos = list(attention)
    return input_ids, attention, obj, pos


def _check_max_tokens(max_tokens: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise UsageError(f"max_tokens must be an integer >= 2, got {max_tokens!r}")
    return max_tokens


def decouple(
    expression: str,
    classes: ClassSpec = "refsegrs",
    max_tokens: int = 20,
    aligned: bool = False,
) -> Decoupled:
    """Tokenise one referring expression and build FIANet's three text masks.

    Args:
        expression: e.g. ``"the vehicle on the left of the bridge"``.
        classes: ``"refsegrs"`` (14 phrases), ``"rrsisd"`` (20), ``"all"`` or a list of phrases.
        max_tokens: token budget N (upstream: 20 RefSegRS, 22 RRSIS-D).
        aligned: ``False`` reproduces upstream's word-index placement; ``True`` marks the
            WordPieces of the matched words.

    Returns:
        :class:`Decoupled` of four int64 tensors of shape ``[max_tokens]``.

    Raises:
        BadInputError: empty or whitespace-only expression.
        UsageError: unknown class list or bad ``max_tokens``.
        WeightsError: the offline tokenizer or tagger package is missing.
    """
    expression = _check_expression(expression)
    lists = _decouple_lists(
        expression, resolve_classes(classes), _check_max_tokens(max_tokens), bool(aligned)
    )
    return Decoupled(*(torch.tensor(x, dtype=torch.long) for x in lists))


def decouple_batch(
    expressions: Sequence[str],
    classes: ClassSpec = "refsegrs",
    max_tokens: int = 20,
    aligned: bool = False,
) -> Decoupled:
    """:func:`decouple` for several expressions, stacked to ``[B, max_tokens]`` tensors.

    Raises:
        BadInputError: no expressions, or one of them is empty.
    """
    if isinstance(expressions, str):
        expressions = [expressions]
    if len(expressions) == 0:
        raise BadInputError("no expressions given")
    resolved = resolve_classes(classes)
    max_tokens = _check_max_tokens(max_tokens)
    rows = [
        _decouple_lists(_check_expression(e), resolved, max_tokens, bool(aligned))
        for e in expressions
    ]
    return Decoupled(*(torch.tensor(list(col), dtype=torch.long) for col in zip(*rows)))
