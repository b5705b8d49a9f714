"""Common machinery of the referring-segmentation dataset readers.

A reader lists records (id, expression, optional metadata) and knows how to read one record's
image and mask; this base class resizes them to the model input size (docs/fianet.md
§Datasets), keeps them as uint8 in memory when the dataset is small (the 2-core CPU cannot afford
re-decoding TIFFs every epoch), decouples every distinct expression once, and returns plain dict
samples.

Sample keys (``S`` = ``img_size``, ``N`` = ``max_tokens``):
    image           float32 [3, S, S], ImageNet-normalized
    mask            int64 [S, S], 1 = referent
    expression      str
    id              str (image / triplet id)
    index           int (position in the dataset)
    text_index      int (index into ``dataset.expressions``; equal expressions share it)
    input_ids, attention_mask, object_mask, position_mask   int64 [N]
    type            str | None   expression type (metadata.jsonl)
    category        str | None   named category (metadata.jsonl)
    needs_disambiguation  bool | None
    union_mask      int64 [S, S] | None  all objects of the named category (metadata.jsonl)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rrsis_geo.data.transforms import (brightness_jitter, colour_jitter, flip_sample,
                                       mirror_expression, names_colour, normalize, resize_image,
                                       resize_mask)
from rrsis_geo.errors import BadInputError

# Datasets whose resized uint8 pixels stay under this size are cached in memory.
AUTO_CACHE_BYTES = 3 * 1024**3

FORMATS = ("refsegrs", "rrsisd")
DEFAULT_MAX_TOKENS = {"refsegrs": 20, "rrsisd": 22}

TEXT_KEYS = ("input_ids", "attention_mask", "object_mask", "position_mask")


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3] (PIL ``convert("RGB")`` like upstream).

    Falls back to rasterio for TIFF variants PIL cannot decode (first three bands, scaled to
    uint8 if needed).
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise BadInputError(f"image file not found: {path}") from None
    except Exception as pil_error:  # noqa: BLE001 - try the GDAL route before giving up
        try:
            import rasterio

            with rasterio.open(path) as src:
                arr = src.read()
        except Exception:  # noqa: BLE001
            raise BadInputError(f"cannot read image {path}: {pil_error}") from None
        if arr.shape[0] == 1:
            arr = np.repeat(arr, 3, axis=0)
        arr = arr[:3]
        if arr.dtype != np.uint8:
            hi = float(arr.max()) or 1.0
            arr = (arr.astype(np.float32) * (255.0 / hi)).round().astype(np.uint8)
        return np.ascontiguousarray(arr.transpose(1, 2, 0))


def read_band(path: Path) -> np.ndarray:
    """Read the first band of a single-band (or multi-band) raster as a 2-D array."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise BadInputError(f"mask file not found: {path}") from None
    except Exception as pil_error:  # noqa: BLE001
        try:
            import rasterio

            with rasterio.open(path) as src:
                arr = src.read(1)
        except Exception:  # noqa: BLE001
            raise BadInputError(f"cannot read mask {path}: {pil_error}") from None
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr


def binary_from_band(arr: np.ndarray, threshold: float = 50) -> np.ndarray:
    """Foreground = value > ``threshold`` (RefSegRS rule), except 0/1 masks, taken as they are."""
    if arr.dtype == bool or (arr.size and arr.max() <= 1):
        return (arr > 0).astype(np.uint8)
    return (arr > threshold).astype(np.uint8)


def read_metadata_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read ``metadata.jsonl`` (one JSON object per line); a missing file gives []."""
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def read_dataset_info(root: Path) -> dict[str, Any]:
    """Read the optional ``dataset.json`` a generator writes next to the data (gsd, classes...)."""
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc.msg})") from None
    return info if isinstance(info, dict) else {}


class ReferringDataset(Dataset):
    """Base reader: subclasses fill ``self.records`` and implement ``_read_image/_read_mask``.

    Args:
        root: dataset root folder.
        split: split name (``train``, ``val``, ``test`` or a generator-defined one).
        img_size: model input side S; images bilinear, masks nearest (docs/fianet.md §Datasets).
        classes: class words for the object mask (``"refsegrs"``, ``"rrsisd"`` or a list);
            default: ``dataset.json``'s ``classes`` if present, else the format's list.
        max_tokens: text length N; default: ``dataset.json``'s, else 20 (RefSegRS) / 22 (RRSIS-D).
        aligned: word→WordPiece aligned masks instead of upstream's index placement.
        cache: keep resized uint8 pixels in memory: True, False or "auto" (if < 3 GiB).
        brightness: training-only brightness jitter amount (0 = off).
        flips: training-only random flips left-right and top-bottom, each with probability 1/2;
            the sentence's direction words are mirrored with the pixels
            (:func:`~rrsis_geo.data.transforms.mirror_expression`).
        colour: training-only :func:`~rrsis_geo.data.transforms.colour_jitter` amount (0 = off),
            for sentences that name no colour.
        seed: seed of the augmentation RNG.
        extend_classes: add the class phrases this split names but the list lacks
            (:meth:`_dataset_class_phrases`); the additions are in ``added_classes``.
        add_classes: phrases added to the class list in any case.
    """

    format_name = "base"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        img_size: int = 480,
        classes: str | Sequence[str] | None = None,
        max_tokens: int | None = None,
        aligned: bool = False,
        cache: bool | str = "auto",
        brightness: float = 0.0,
        flips: bool = False,
        colour: float = 0.0,
        seed: int = 0,
        extend_classes: bool = False,
        add_classes: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadInputError(f"dataset root is not a folder: {self.root}")
        self.split = split
        self.img_size = int(img_size)
        self.info = read_dataset_info(self.root)
        self._explicit_classes = classes if classes is not None else self.info.get("classes")
        self.classes: str | list[str] = self._explicit_classes or self.format_name
        self.max_tokens = int(
            max_tokens or self.info.get("max_tokens") or DEFAULT_MAX_TOKENS[self.format_name]
        )
        self.aligned = bool(aligned)
        self.brightness = float(brightness)
        self.flips = bool(flips)
        self.colour = float(colour)
        self._rng = torch.Generator().manual_seed(int(seed))
        self.extend_classes = bool(extend_classes)
        self.add_classes = [str(c) for c in add_classes]
        #: phrase -> where it came from ("option", "metadata", "dataset.json", "nouns")
        self.added_classes: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []
        self._load_records()
        if not self.records:
            raise BadInputError(f"no samples for split {split!r} in {self.root}")
        self._attach_metadata()
        self._choose_classes()
        self._decouple_all()
        n = len(self.records)
        per_item = self.img_size**2 * (3 + 1 + (1 if self.has_union_masks else 0))
        self.cache_enabled = (
            bool(cache) if cache != "auto" else n * per_item <= AUTO_CACHE_BYTES
        )
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    # ----------------------------------------------------------------- augmentation RNG
    def augment_rng_state(self) -> torch.Tensor:
        """State of the augmentation RNG (stored in a training checkpoint)."""
        return self._rng.get_state()

    def set_augment_rng_state(self, state: torch.Tensor) -> None:
        """Restore the augmentation RNG from :meth:`augment_rng_state` (resume)."""
        self._rng.set_state(state)

    # ----------------------------------------------------------------- subclass API
    def _load_records(self) -> None:
        """Fill ``self.records`` with dicts holding at least ``id`` and ``expression``."""
        raise NotImplementedError

    def _read_image(self, record: dict[str, Any]) -> np.ndarray:
        """uint8 RGB [H, W, 3] of one record."""
        raise NotImplementedError

    def _read_mask(self, record: dict[str, Any]) -> np.ndarray:
        """Binary uint8 [H, W] of one record."""
        raise NotImplementedError

    # ----------------------------------------------------------------- metadata
    def _attach_metadata(self) -> None:
        """Join ``metadata.jsonl`` rows to records by id (and expression when ids repeat)."""
        rows = read_metadata_jsonl(self.root / "metadata.jsonl")
        by_key: dict[tuple[str, str | None], dict[str, Any]] = {}
        for row in rows:
            if "split" in row and row["split"] != self.split:
                continue
            rid = str(row.get("id"))
            by_key[(rid, None)] = row
            if "expression" in row:
                by_key[(rid, str(row["expression"]).strip())] = row
        for rec in self.records:
            row = by_key.get((rec["id"], rec["expression"])) or by_key.get((rec["id"], None))
            rec["meta"] = row or {}
        self.has_metadata = any(rec["meta"] for rec in self.records)
        self.has_union_masks = any(_union_path(rec["meta"]) for rec in self.records)
        gsds = [float(rec["meta"]["gsd"]) for rec in self.records
                if rec["meta"].get("gsd") is not None]
        if "gsd" not in self.info and gsds:
            # metres per pixel of the chips; a mix of resolutions (scale augmentation) is
            # described by its median sentence, the resolution inference should resample to
            self.info["gsd"] = float(np.median(gsds))
            if max(gsds) - min(gsds) > 1e-6:
                self.info["gsd_range"] = [min(gsds), max(gsds)]

    def trained_classes(self) -> list[str] | None:
        """The categories this split teaches the model to *find*: those of its sentences whose
        referent is in the chip (any type but "absent"), lower case, sorted; None when one of
        those sentences has no ``category`` (``metadata.jsonl``), since the list is then
        unknown. Saved with the model (``meta["trained_classes"]``), it lets scene-level
        selection refuse a class the model never saw (:mod:`rrsis_geo.inference.scene`)."""
        from rrsis_geo.data.synth.vocabulary import ABSENT_TYPE
        from rrsis_geo.text.classes import normalize_phrase

        found: set[str] = set()
        for rec in self.records:
            meta = rec["meta"]
            if meta.get("type") == ABSENT_TYPE:
                continue
            cat = meta.get("category")
            if not (isinstance(cat, str) and cat.strip()):
                return None
            found.add(normalize_phrase(cat))
        return sorted(found)

    def _choose_classes(self) -> None:
        """Object-mask class phrases when none were given (argument or ``dataset.json``).

        Categories named in ``metadata.jsonl`` that the format's list lacks (generated data mixes
        RefSegRS and RRSIS-D classes) switch to the union of both lists plus those categories.
        """
        if self._explicit_classes is not None:
            self.classes = (self._explicit_classes if isinstance(self._explicit_classes, str)
                            else list(self._explicit_classes))
        else:
            from rrsis_geo.text import CLASS_LISTS

            base = CLASS_LISTS[self.format_name]
            cats = [str(rec["meta"]["category"]) for rec in self.records
                    if rec["meta"].get("category")]
            if any(c not in base for c in cats):
                self.classes = list(dict.fromkeys([*CLASS_LISTS["all"], *cats]))
            else:
                self.classes = self.format_name
        if self.extend_classes or self.add_classes:
            self._extend_class_list()

    #: an expression's head noun becomes a class only when this many expressions name it
    NOUN_CLASS_MIN_EXPRESSIONS = 2

    def _dataset_class_phrases(self, classes: Sequence[str]) -> list[tuple[str, str]]:
        """Class phrases this split names, with their source, in the order found.

        Sources: the ``category`` of the split's ``metadata.jsonl`` rows; ``dataset.json``'s
        ``classes`` list; and, for expressions without a category that contain no class phrase,
        the head noun (:func:`~rrsis_geo.text.classes.head_noun_phrase`) when at least
        :attr:`NOUN_CLASS_MIN_EXPRESSIONS` distinct expressions name it.
        """
        from rrsis_geo.text.classes import head_noun_phrase

        found: list[tuple[str, str]] = []
        for rec in self.records:
            cat = rec["meta"].get("category")
            if isinstance(cat, str) and cat.strip():
                found.append((cat, "metadata"))
        info_classes = self.info.get("classes")
        if isinstance(info_classes, list):
            found.extend((c, "dataset.json") for c in info_classes if isinstance(c, str))
        known = [c.lower() for c in classes] + [c.lower() for c, _ in found]
        counts: dict[str, set[str]] = {}
        unnamed = dict.fromkeys(rec["expression"] for rec in self.records
                                if not rec["meta"].get("category"))
        for expr in unnamed:  # each distinct expression once
            if any(c in expr.lower() for c in known):
                continue
            noun = head_noun_phrase(expr)
            if noun:
                counts.setdefault(noun, set()).add(expr)
        found.extend((n, "nouns") for n, exprs in counts.items()
                     if len(exprs) >= self.NOUN_CLASS_MIN_EXPRESSIONS)
        return found

    def _extend_class_list(self) -> None:
        from rrsis_geo.text.classes import (extend_class_list, normalize_phrase,
                                            resolve_classes)

        base = list(resolve_classes(self.classes))
        found = [(c, "option") for c in self.add_classes]
        if self.extend_classes:
            found += self._dataset_class_phrases(base)
        classes, added = extend_class_list(base, [c for c, _ in found])
        if added:
            where = {}
            for phrase, source in found:
                where.setdefault(normalize_phrase(phrase), source)
            self.added_classes = {a: where[a] for a in added}
            self.classes = classes

    # ----------------------------------------------------------------- text
    def _decouple_all(self) -> None:
        """Decouple each distinct expression once; records point at it by ``text_index``."""
        from rrsis_geo.text import decouple  # lazy: NLTK/tokenizer load only when needed

        self.expressions: list[str] = []
        index: dict[str, int] = {}

        def add(expr: str) -> int:
            if expr not in index:
                index[expr] = len(self.expressions)
                self.expressions.append(expr)
            return index[expr]

        for rec in self.records:
            rec["text_index"] = add(rec["expression"])
        #: distinct expressions of the records; with flips, mirrored sentences follow them
        self.num_record_expressions = len(self.expressions)
        #: (text_index, flipped left-right, flipped top-bottom) -> the mirrored sentence's index
        self.mirrored: dict[tuple[int, bool, bool], int] = {}
        if self.flips:
            for t, expr in enumerate(self.expressions[: self.num_record_expressions]):
                for h, v in ((True, False), (False, True), (True, True)):
                    self.mirrored[t, h, v] = add(mirror_expression(expr, h, v))
        rows = [
            decouple(e, classes=self.classes, max_tokens=self.max_tokens, aligned=self.aligned)
            for e in self.expressions
        ]
        # [U, N] per text key: one row per distinct expression
        self.text: dict[str, torch.Tensor] = {
            k: torch.stack([torch.as_tensor(getattr(r, k), dtype=torch.long) for r in rows])
            for k in TEXT_KEYS
        }

    # ----------------------------------------------------------------- pixels
    def _pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Resized uint8 image [3,S,S], mask [S,S] and union mask [S,S] (or None) of record i."""
        if i in self._cache:
            return self._cache[i]
        rec = self.records[i]
        image = resize_image(self._read_image(rec), self.img_size)
        mask = resize_mask(self._read_mask(rec), self.img_size)
        union = None
        upath = _union_path(rec["meta"])
        if upath:
            union = resize_mask(binary_from_band(read_band(self.root / upath)), self.img_size)
        if self.cache_enabled:
            self._cache[i] = (image, mask, union)
        return image, mask, union

    def preload(self, progress: bool = False) -> None:
        """Read every sample into the in-memory cache now (no-op when caching is off)."""
        if not self.cache_enabled:
            return
        it = range(len(self))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"loading {self.split}", unit="img", leave=False)
        for i in it:
            self._pixels(i)

    # ----------------------------------------------------------------- Dataset API
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        rec = self.records[i]
        image, mask, union = self._pixels(i)
        t = rec["text_index"]
        expression = rec["expression"]
        if self.flips:
            h, v = (torch.rand(2, generator=self._rng) < 0.5).tolist()
            if h or v:
                image, mask, union = flip_sample([image, mask, union], h, v)
                t = self.mirrored[t, h, v]
                expression = self.expressions[t]
        if self.colour > 0 and not names_colour(expression):
            image = colour_jitter(image, self.colour, self._rng)
        if self.brightness > 0:
            image = brightness_jitter(image, self.brightness, self._rng)
        meta = rec["meta"]
        nd = meta.get("needs_disambiguation")
        sample: dict[str, Any] = {
            "image": normalize(image),
            "mask": mask.long(),
            "expression": expression,
            "id": rec["id"],
            "index": i,
            "text_index": t,
            "type": meta.get("type"),
            "category": meta.get("category"),
            "needs_disambiguation": None if nd is None else bool(nd),
            "union_mask": None if union is None else union.long(),
        }
        for k in TEXT_KEYS:
            sample[k] = self.text[k][t]
        return sample


def _union_path(meta: dict[str, Any]) -> str | None:
    """Path of the union mask in a metadata row, whatever the generator called the key."""
    for key in ("union_mask", "union_mask_path", "union"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep other values as lists; ``union_mask`` is stacked only if all have one."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.stack(values)
        elif key in ("index", "text_index"):
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out


def open_dataset(
    root: str | os.PathLike[str], format: str, split: str, **kwargs: Any
) -> ReferringDataset:
    """Open a dataset of the given ``format`` (``refsegrs`` or ``rrsisd``).

    Keyword arguments are those of :class:`ReferringDataset`.
    """
    if format == "refsegrs":
        from rrsis_geo.data.refsegrs import RefSegRSDataset

        return RefSegRSDataset(root, split, **kwargs)
    if format == "rrsisd":
        from rrsis_geo.data.rrsisd import RRSISDDataset

        return RRSISDDataset(root, split, **kwargs)
    raise BadInputError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}")
