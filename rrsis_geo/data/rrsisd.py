"""RRSIS-D reader and a small COCO RLE codec (pycocotools is not a dependency).

The layout is described in docs/fianet.md §Datasets.

Layout::

    ROOT/rrsisd/refs(unc).p         pickled list of refs {ref_id, ann_id, image_id, split,
                                    category_id, file_name, sentences=[{raw, sent, ...}]}
    ROOT/rrsisd/instances.json      COCO-like: images, annotations (segmentation = [RLE]), categories
    ROOT/images/rrsisd/JPEGImages/*.jpg

The referent mask is the sum of the decoded segments == 1 (upstream REFER rule: pixels covered
twice become background). One record per sentence.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rrsis_geo.data.referring import ReferringDataset, read_rgb
from rrsis_geo.errors import BadInputError

# ---------------------------------------------------------------------------- RLE codec


def rle_counts_from_string(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE counts string (LEB128-like, 5 bits per char, offset 48).

    From the fourth count on, each value is stored as a difference to the count two before it.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(s):
                raise BadInputError("truncated RLE counts string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_counts_to_string(counts: list[int]) -> str:
    """Encode run lengths as COCO's compressed counts string (inverse of the decoder)."""
    out = []
    for i, cnt in enumerate(counts):
        x = int(cnt)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO RLE (``counts`` as list = uncompressed, or str/bytes = compressed).

    Args:
        rle: ``{"size": [h, w], "counts": ...}``; runs alternate 0/1 starting with 0,
            over the mask flattened in column-major (Fortran) order.

    Returns:
        uint8 array [h, w] with values {0, 1}.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise BadInputError(f"not a COCO RLE: {str(rle)[:80]}") from None
    if isinstance(counts, (str, bytes)):
        counts = rle_counts_from_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise BadInputError(f"RLE counts sum to {counts.sum()}, expected {h}*{w}={h * w}")
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def rle_encode(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """Encode a binary [h, w] mask as COCO RLE (compressed string or uncompressed list)."""
    h, w = mask.shape
    flat = (np.asarray(mask).T.reshape(-1) > 0).astype(np.int8)
    # run boundaries; the first run counts zeros (may be empty)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {
        "size": [h, w],
        "counts": rle_counts_to_string(counts) if compressed else [int(c) for c in counts],
    }


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """Rasterize COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` to one uint8 [h, w] mask each summed."""
    total = np.zeros((h, w), dtype=np.uint8)
    for poly in polygons:
        im = Image.new("L", (w, h), 0)
        ImageDraw.Draw(im).polygon([float(v) for v in poly], outline=1, fill=1)
        total += np.asarray(im, dtype=np.uint8)
    return total


def segmentation_to_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """Referent mask of one annotation: sum of its decoded segments == 1 (REFER rule)."""
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if not segmentation:
        return np.zeros((h, w), dtype=np.uint8)
    if all(isinstance(s, dict) for s in segmentation):
        total = np.zeros((h, w), dtype=np.int32)
        for s in segmentation:
            m = rle_decode(s)
            if m.shape != (h, w):
                raise BadInputError(f"RLE size {list(m.shape)} differs from image size {[h, w]}")
            total += m
    else:
        total = polygons_to_mask(segmentation, h, w).astype(np.int32)
    return (total == 1).astype(np.uint8)


# ---------------------------------------------------------------------------- dataset


class RRSISDDataset(ReferringDataset):
    """RRSIS-D-layout dataset; see :class:`~rrsis_geo.data.referring.ReferringDataset`."""

    format_name = "rrsisd"

    def _load_records(self) -> None:
        meta_dir = self.root / "rrsisd"
        refs_path = meta_dir / "refs(unc).p"
        inst_path = meta_dir / "instances.json"
        for p in (refs_path, inst_path):
            if not p.is_file():
                raise BadInputError(f"{p} not found (RRSIS-D layout)")
        try:
            with open(refs_path, "rb") as fh:
                # a pickled list of plain dicts from the dataset authors; only open trusted data
                refs = pickle.load(fh)
            inst = json.loads(inst_path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"cannot read RRSIS-D annotations: {exc}") from None
        self._images = {img["id"]: img for img in inst.get("images", [])}
        self._anns = {ann["id"]: ann for ann in inst.get("annotations", [])}
        self._cats = {c["id"]: c.get("name") for c in inst.get("categories", [])}
        self._image_dir = self.root / "images" / "rrsisd" / "JPEGImages"
        for ref in refs:
            if ref.get("split") != self.split:
                continue
            if ref["ann_id"] not in self._anns:
                raise BadInputError(f"ref {ref.get('ref_id')}: annotation {ref['ann_id']} missing")
            for sent in ref.get("sentences", []):
                expr = str(sent.get("raw") or sent.get("sent") or "").strip()
                if not expr:
                    continue
                self.records.append(
                    {
                        "id": str(ref.get("ref_id", ref["ann_id"])),
                        "expression": expr,
                        "ann_id": ref["ann_id"],
                        "image_id": ref["image_id"],
                        "file_name": ref.get("file_name"),
                        "category_name": self._cats.get(ref.get("category_id")),
                    }
                )

    def _attach_metadata(self) -> None:
        super()._attach_metadata()
        for rec in self.records:  # RRSIS-D knows each ref's category even without metadata.jsonl
            if rec["category_name"] and "category" not in rec["meta"]:
                rec["meta"] = {**rec["meta"], "category": rec["category_name"]}

    def _image_info(self, record: dict[str, Any]) -> dict[str, Any]:
        info = self._images.get(record["image_id"], {})
        return info

    def _read_image(self, record: dict[str, Any]) -> np.ndarray:
        name = self._image_info(record).get("file_name") or record["file_name"]
        return read_rgb(Path(self._image_dir) / name)

    def _read_mask(self, record: dict[str, Any]) -> np.ndarray:
        ann = self._anns[record["ann_id"]]
        info = self._image_info(record)
        h, w = info.get("height"), info.get("width")
        seg = ann.get("segmentation")
        if h is None or w is None:
            first = seg[0] if isinstance(seg, list) and seg else seg
            if isinstance(first, dict) and "size" in first:
                h, w = first["size"]
            else:
                h, w = read_rgb(self._image_dir / record["file_name"]).shape[:2]
        return segmentation_to_mask(seg, int(h), int(w))
