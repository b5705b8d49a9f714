"""Ground-object class phrases that FIANet's object mask looks for.

See docs/fianet.md §Text decoupling.

Upstream keeps one hard-coded set per dataset; the object mask marks every class phrase that
occurs in the expression. Order is irrelevant (the masks are a union), so the lists below are kept
in upstream's order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rrsis_geo.errors import UsageError

#: RefSegRS (SkyScapes, Munich aerial): 14 classes.
REFSEGRS_CLASSES: tuple[str, ...] = (
    "road",
    "vehicle",
    "car",
    "van",
    "building",
    "truck",
    "trailer",
    "bus",
    "road marking",
    "bikeway",
    "sidewalk",
    "tree",
    "low vegetation",
    "impervious surface",
)

#: RRSIS-D (DIOR-RSVG, Google Earth): 20 classes.
RRSISD_CLASSES: tuple[str, ...] = (
    "airplane",
    "airport",
    "golf field",
    "expressway service area",
    "baseball field",
    "stadium",
    "ground track field",
    "storage tank",
    "basketball court",
    "chimney",
    "tennis court",
    "overpass",
    "train station",
    "ship",
    "expressway toll station",
    "dam",
    "harbor",
    "bridge",
    "vehicle",
    "windmill",
)

#: Named class lists accepted by :func:`resolve_classes`.
CLASS_LISTS: dict[str, tuple[str, ...]] = {
    "refsegrs": REFSEGRS_CLASSES,
    "rrsisd": RRSISD_CLASSES,
    # Union, first-seen order ("vehicle" is in both lists).
    "all": tuple(dict.fromkeys(REFSEGRS_CLASSES + RRSISD_CLASSES)),
}

#: Token budget (N_l) upstream uses per dataset.
DATASET_MAX_TOKENS: dict[str, int] = {"refsegrs": 20, "rrsisd": 22}


def normalize_phrase(text: Any) -> str:
    """Lower case, runs of white space as one space, no space at the ends ("  Storage  Tank" ->
    "storage tank"): how class phrases and categories are compared."""
    return " ".join(str(text).lower().split())


def resolve_classes(name_or_list: str | Iterable[str]) -> tuple[str, ...]:
    """Turn a class-list name or a user list into a tuple of class phrases.

    Args:
        name_or_list: ``"refsegrs"``, ``"rrsisd"``, ``"all"`` (union of both, 33 phrases), or an
            iterable of class phrases such as ``["solar panel", "pool"]``.

    Returns:
        The class phrases, duplicates removed, order kept.

    Raises:
        UsageError: unknown list name, or a phrase that is empty or not a string.
    """
    if isinstance(name_or_list, str):
        key = name_or_list.strip().lower()
        if key not in CLASS_LISTS:
            raise UsageError(
                f"unknown class list {name_or_list!r}; use one of "
                f"{', '.join(sorted(CLASS_LISTS))} or a list of class phrases"
            )
        return CLASS_LISTS[key]
    phrases: list[str] = []
    for item in name_or_list:
        if not isinstance(item, str) or not item.strip():
            raise UsageError(f"class phrases must be non-empty strings, got {item!r}")
        phrases.append(item.strip())
    return tuple(dict.fromkeys(phrases))


def extend_class_list(base: str | Iterable[str],
                      phrases: Iterable[str]) -> tuple[list[str], list[str]]:
    """Append the ``phrases`` that ``base`` lacks (compared case-insensitively, stored lower-case).

    Args:
        base: a class-list name or a list of class phrases (the model's list).
        phrases: candidate class phrases, e.g. a dataset's categories.

    Returns:
        (the extended list, the phrases added in order).
    """
    classes = list(resolve_classes(base))
    seen = {c.lower() for c in classes}
    added: list[str] = []
    for phrase in phrases:
        if not isinstance(phrase, str):
            continue
        p = normalize_phrase(phrase)
        if p and p not in seen:
            seen.add(p)
            added.append(p)
    return classes + added, added


#: Nouns that name a place in the image, a colour or nothing in particular, never a class.
NOT_CLASS_NOUNS = frozenset("""
left right top bottom middle center centre side sides corner corners part parts edge edges
border half end front back north south east west northwest northeast southwest southeast
north-west north-east south-west south-east upper lower image picture photo scene view area
region place position one ones object objects thing things item items target shape shapes
color colour size group row line lines column set pair lot kind type none
red orange yellow green blue purple pink brown black white gray grey light dark
""".split())


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")) and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def head_noun_phrase(expression: str) -> str | None:
    """The noun the expression refers to: the first run of nouns before any preposition.

    ``"the large swimming pool near the road"`` → ``"pool"``; ``"two solar panels"`` →
    ``"solar panel"`` when the tagger reads "solar" as a noun, else ``"panel"``. Plurals are
    made singular (the decoupler matches class phrases as substrings, so "pool" also marks
    "pools"); leading place words ("the leftmost house", "the top building") are skipped. None
    when the noun names a place, a colour or nothing in particular (:data:`NOT_CLASS_NOUNS`:
    "the white one"), or when there is no noun before the first preposition.
    """
    from rrsis_geo.text import tagger

    words = tagger.word_tokenize(expression)
    run: list[str] = []
    for word, tag in tagger.pos_tag(words):
        if tag.startswith("NN") and word.isalpha():
            run.append(word.lower())
        elif run or tag in ("IN", "TO", "CC", "WDT", "WP", "VBZ", "VBP", "VBD"):
            break
    while run and (run[0] in NOT_CLASS_NOUNS or run[0].endswith("most")):
        run.pop(0)  # "the leftmost house", "the top building" tagged as noun runs
    if not run or any(w in NOT_CLASS_NOUNS for w in run):
        return None
    run[-1] = _singular(run[-1])
    return " ".join(run)


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
