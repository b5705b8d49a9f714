"""RRSIS-D reader; COCO RLE and polygon masks are decoded with pycocotools.

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
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.data.referring import ReferringDataset, read_rgb
from rrsis_geo.errors import BadInputError

# ---------------------------------------------------------------------------- RLE codec


def _coco_decode(rles: Any) -> np.ndarray:
    """``pycocotools.mask.decode`` without its NumPy 2 deprecation warning (raised inside
    pycocotools on every call; the result is unaffected)."""
    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rles)


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO RLE with pycocotools (``counts`` as list = uncompressed, or str/bytes =
    COCO's compressed string).

    Args:
        rle: ``{"size": [h, w], "counts": ...}``; runs alternate 0/1 starting with 0,
            over the mask flattened in column-major (Fortran) order.

    Returns:
        uint8 array [h, w] with values {0, 1}.

    Raises:
        BadInputError: not an RLE, counts that do not cover ``h·w`` pixels, or a counts string
            that pycocotools would not write (truncated or damaged).
    """
    from pycocotools import mask as coco_mask

    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise BadInputError(f"not a COCO RLE: {str(rle)[:80]}") from None
    if isinstance(counts, (str, bytes)):
        encoded = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    else:
        runs = np.asarray(counts, dtype=np.int64)
        if (runs < 0).any() or runs.sum() != h * w:
            raise BadInputError(f"RLE counts sum to {runs.sum()}, expected {h}*{w}={h * w}")
        encoded = coco_mask.frPyObjects({"size": [h, w], "counts": [int(c) for c in runs]},
                                        h, w)["counts"]
    try:
        mask = _coco_decode({"size": [h, w], "counts": encoded})
    except ValueError as exc:  # counts longer than the mask
        raise BadInputError(f"invalid COCO RLE counts for a {h}x{w} mask: {exc}") from None
    # counts shorter than the mask leave pixels undefined: a string that does not re-encode to
    # itself is damaged (pycocotools writes the one canonical string of a mask)
    if coco_mask.encode(mask)["counts"] != encoded:
        raise BadInputError(f"invalid COCO RLE counts string for a {h}x{w} mask "
                            "(truncated or damaged)")
    return np.ascontiguousarray(mask)


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """Rasterize COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` with pycocotools (as the COCO /
    REFER tools that made RRSIS-D did); the polygons' masks are summed (uint8 [h, w])."""
    from pycocotools import mask as coco_mask

    polys = [[float(v) for v in poly] for poly in polygons]
    masks = _coco_decode(coco_mask.frPyObjects(polys, h, w))   # [h, w, n]
    return masks.sum(axis=2, dtype=np.uint8)


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
