"""Ground-object class phrases that FIANet's object mask looks for (SPEC §3).

Upstream keeps one hard-coded set per dataset; the object mask marks every class phrase that
occurs in the expression. Order is irrelevant (the masks are a union), so the lists below are kept
in the order SPEC §3 gives them.
"""

from __future__ import annotations

from collections.abc import Iterable

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
