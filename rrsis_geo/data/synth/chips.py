"""Chips: generate one referring sample and write many in the RefSegRS layout
(``images/``, ``masks/``, ``union_masks/``, ``output_phrase_<split>.txt``, ``metadata.jsonl``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.data.synth.absent import absent_chip
from rrsis_geo.data.synth.canvas import Canvas, Chip, Obj, make_road
from rrsis_geo.data.synth.expressions import make_expression
from rrsis_geo.data.synth.rendering import render
from rrsis_geo.data.synth.scenarios import Retry, add_clutter, build_scenario
from rrsis_geo.data.synth.vocabulary import (
    ABSENT_TYPE,
    CHIP_GSD,
    MAX_CHIP_SIZE,
    MIN_CHIP_SIZE,
    TYPE_WEIGHTS,
)
from rrsis_geo.errors import UsageError


def check_chip_size(size: int) -> None:
    if not MIN_CHIP_SIZE <= size <= MAX_CHIP_SIZE:
        raise UsageError(f"chip size must be between {MIN_CHIP_SIZE} and {MAX_CHIP_SIZE} px, "
                         f"got {size}")


def generate_chip(seed: int, size: int = 192, *, etype: str | None = None,
                  realism: str = "none", confusable: float = 0.0) -> Chip:
    """Generate one referring chip, deterministic in (seed, size).

    Args:
        seed: any non-negative int.
        size: chip side in px (at :data:`CHIP_GSD` m/px), 128..2048.
        etype: force an expression type (default: drawn with :data:`TYPE_WEIGHTS`), or
            ``"absent"`` for a negative chip (empty mask; never drawn by default).
        realism: ``none`` | ``textures`` | ``sensor`` | ``all`` (:mod:`rrsis_geo.data.synth.look`);
            the layout and sentence do not depend on it, only the pixels.
        confusable: for an absent chip, the share of its category negatives that name a
            look-alike of a category the chip shows (see ``absent._absent_category``); 0 (the
            default) draws nothing for it, so chips stay as they were.

    Returns:
        A :class:`Chip` with image [size, size, 3] uint8 and masks [size, size] bool.
    """
    return make_chip(seed, size, etype, realism=realism, confusable=confusable)[0]


def make_chip(seed: int, size: int, etype: str | None = None,
               forbid: frozenset[str] = frozenset(), tag: int = 0x5EED, realism: str = "none",
               confusable: float = 0.0) -> tuple[Chip, np.ndarray, list[Obj]]:
    """:func:`generate_chip` plus its label map and objects; ``forbid`` keeps categories out."""
    from rrsis_geo.data.synth.look import make_look, names_colour

    look = make_look(realism, seed, size, tag)
    check_chip_size(size)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    if etype is not None and etype not in TYPE_WEIGHTS and etype != ABSENT_TYPE:
        raise UsageError(f"unknown expression type {etype!r}; one of "
                         f"{', '.join([*TYPE_WEIGHTS, ABSENT_TYPE])}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, tag]))
    types = list(TYPE_WEIGHTS)
    probs = np.array([TYPE_WEIGHTS[t] for t in types])
    absent = etype == ABSENT_TYPE
    # an absent chip's scene is built like any other chip's (same scenario, distractors and
    # clutter), only its sentence changes: the model cannot tell negatives by the picture
    want = (None if absent else etype) or str(types[int(rng.choice(len(types),
                                                                   p=probs / probs.sum()))])
    for _attempt in range(50):
        cv = Canvas(size, size)
        if "road" not in forbid and rng.random() < 0.45:
            cv.add(make_road(cv, rng))
        try:
            sc = build_scenario(cv, rng, want, forbid)
        except Retry:
            continue
        protected = {sc.category} | ({sc.anchor.category} if sc.anchor is not None else set())
        add_clutter(cv, rng, protected | set(forbid), int(rng.integers(2, 7)))
        if absent:
            img, label = render(cv, rng, look=look)
            chip = absent_chip(rng, cv, img, label, seed, want, confusable)
            if chip is None:
                continue
            if look is not None:
                chip.image, chip.details["sensor"] = look.finish(
                    chip.image, allow_pan=not names_colour(chip.expression))
            return chip, label, cv.objects
        expression = make_expression(rng, sc, cv)
        img, label = render(cv, rng, look=look)
        mask = label == sc.referent.id
        same = [o.id for o in cv.objects if o.category == sc.category]
        union = np.isin(label, same)
        if not mask.any() or (sc.distractors and union.sum() <= mask.sum()):
            continue  # referent or distractors fully hidden: redraw
        if sc.anchor is not None and not (label == sc.anchor.id).any():
            continue
        details = dict(sc.details)
        details["distractors"] = len(sc.distractors)
        if look is not None:
            img, details["sensor"] = look.finish(img, allow_pan=not names_colour(expression))
        chip = Chip(image=img, mask=mask, expression=expression, category=sc.category,
                    type=sc.type, needs_disambiguation=bool(sc.distractors),
                    category_union_mask=union, seed=seed, details=details)
        return chip, label, cv.objects
    raise RuntimeError(f"could not generate a {want} chip for seed {seed} at size {size}")


# --------------------------------------------------------------------------------------------
# writing: RefSegRS layout
# --------------------------------------------------------------------------------------------

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_CHIPS_PER_CALL = 1 << 20


def write_plain_tif(path: Path, arr: np.ndarray, deflate: bool) -> None:
    """Plain (not georeferenced) TIFF, written atomically. arr: [H,W,3] or [H,W] uint8.

    A baseline GeoTIFF-driver file without CRS or transform: one band per channel, pixel
    interleaved, RGB for three bands; ``deflate`` compresses (level 1: masks are mostly zeros).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    h, w = arr.shape[:2]
    bands = np.ascontiguousarray(arr, dtype=np.uint8)
    bands = bands.transpose(2, 0, 1) if bands.ndim == 3 else bands[None]
    opts: dict[str, Any] = {"compress": "deflate", "zlevel": 1} if deflate else {}
    if bands.shape[0] == 3:
        opts["photometric"] = "rgb"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain on purpose
            with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h,
                               count=bands.shape[0], dtype="uint8", **opts) as dst:
                dst.write(bands)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def chip_seed(seed: int, index: int) -> int:
    """Seed of chip ``index`` of a ``write_chips(seed=seed)`` run (splits never collide)."""
    return seed * MAX_CHIPS_PER_CALL + index


def chip_is_absent(chip_seed_: int, absent_fraction: float) -> bool:
    """Whether the chip of seed ``chip_seed_`` is a negative one in a ``write_chips`` run.

    Decided by its own small generator (not the chip's), so positive chips stay identical for
    any fraction and the choice is reproducible from the recorded seed alone.
    """
    if absent_fraction <= 0:
        return False
    r = np.random.default_rng(np.random.SeedSequence([chip_seed_, 0xAB5E]))
    return bool(r.random() < absent_fraction)


MAX_ABSENT_FRACTION = 0.9


def write_chips(out_dir: str | os.PathLike[str], count: int, size: int = 192, seed: int = 0,
                split: str = "train", progress: Callable[[int], None] | None = None,
                absent_fraction: float = 0.0, realism: str = "none",
                confusable: float = 0.0) -> list[dict[str, Any]]:
    """Write ``count`` chips to ``out_dir`` in the RefSegRS layout (+ metadata.jsonl).

    Files: ``images/<id>.tif`` (RGB uint8), ``masks/<id>.tif`` (uint8, 255 = referent),
    ``union_masks/<id>.tif`` (uint8, 255 = every object of the named category),
    ``output_phrase_<split>.txt`` ("<id> <expression>" lines, appended) and ``metadata.jsonl``
    (one JSON object per chip, appended). Ids are ``f"{split}_{seed}_{i:06d}"``; writing the same
    (split, seed) twice into one root is refused, another split or seed is appended.

    Args:
        progress: called with 1 after each chip (e.g. ``tqdm.update``).
        absent_fraction: share (0..0.9) of negative ``absent`` chips (empty mask), each
            chosen by :func:`chip_is_absent`; regenerate one with
            ``generate_chip(rec["seed"], size, etype="absent")``.
        realism: ``none`` | ``textures`` | ``sensor`` | ``all``, see :func:`generate_chip`
            (recorded in each record when not ``none``).
        confusable: share (0..1) of the absent chips' category negatives that name a look-alike
            of a category the chip shows, see :func:`generate_chip` (regenerate one with
            ``generate_chip(rec["seed"], size, etype="absent", confusable=...)``).

    Returns:
        The metadata records written.
    """
    if not 0.0 <= absent_fraction <= MAX_ABSENT_FRACTION:  # also rejects NaN
        raise UsageError(f"absent fraction must be between 0 and {MAX_ABSENT_FRACTION}, "
                         f"got {absent_fraction}")
    if count < 1 or count >= MAX_CHIPS_PER_CALL:
        raise UsageError(f"count must be between 1 and {MAX_CHIPS_PER_CALL - 1}, got {count}")
    if not 0.0 <= confusable <= 1.0:  # also rejects NaN
        raise UsageError(f"confusable share must be between 0 and 1, got {confusable}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    from rrsis_geo.data.synth.look import check_realism

    check_realism(realism)
    if not _SPLIT_RE.match(split):
        raise UsageError(f"split name must match [A-Za-z0-9_-]+, got {split!r}")
    check_chip_size(size)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    for sub in ("images", "masks", "union_masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    meta_path = root / "metadata.jsonl"
    phrase_path = root / f"output_phrase_{split}.txt"
    prefix = f"{split}_{seed}_"
    old_meta = meta_path.read_text(encoding="utf-8") if meta_path.exists() else ""
    if any(json.loads(line)["id"].startswith(prefix) for line in old_meta.splitlines()
           if line.strip()):
        raise UsageError(f"{root} already holds split {split!r} with seed {seed}; "
                         "use another seed or output folder")
    old_phrases = phrase_path.read_text(encoding="utf-8") if phrase_path.exists() else ""
    if old_phrases and not old_phrases.endswith("\n"):
        old_phrases += "\n"
    if old_meta and not old_meta.endswith("\n"):
        old_meta += "\n"
    records: list[dict[str, Any]] = []
    phrases: list[str] = []
    for i in range(count):
        cs = chip_seed(seed, i)
        chip = generate_chip(cs, size, etype=ABSENT_TYPE if chip_is_absent(
            cs, absent_fraction) else None, realism=realism, confusable=confusable)
        cid = f"{prefix}{i:06d}"
        # images uncompressed (speed; chips barely compress), masks deflated (mostly zeros)
        write_plain_tif(root / "images" / f"{cid}.tif", chip.image, deflate=False)
        write_plain_tif(root / "masks" / f"{cid}.tif",
                         chip.mask.astype(np.uint8) * 255, deflate=True)
        write_plain_tif(root / "union_masks" / f"{cid}.tif",
                         chip.category_union_mask.astype(np.uint8) * 255, deflate=True)
        rec = {
            "id": cid, "split": split, "expression": chip.expression,
            "category": chip.category, "type": chip.type,
            "needs_disambiguation": chip.needs_disambiguation,
            "image": f"images/{cid}.tif", "mask": f"masks/{cid}.tif",
            "union_mask": f"union_masks/{cid}.tif", "seed": cs, "size": size,
            "gsd": CHIP_GSD, "details": chip.details,
        }
        if realism != "none":
            rec["realism"] = realism
        records.append(rec)
        phrases.append(f"{cid} {chip.expression}\n")
        if progress is not None:
            progress(1)
    # index files last, so an interrupted run leaves no lines pointing at missing files
    _atomic_text(phrase_path, old_phrases + "".join(phrases))
    _atomic_text(meta_path, old_meta + "".join(json.dumps(r) + "\n" for r in records))
    return records
