"""``dataset build``: a referring-segmentation dataset (RefSegRS layout) from a raster and labels.

Steps: read the raster as ``segment`` does (bands, stretch, nodata, resampled to the target
ground resolution); read and reproject the labels (:mod:`.labels`); cut the work grid into
blocks and chips per split (:mod:`.grid`); per chip, rasterize the objects and generate the
sentences (:mod:`.expressions`); add absent negatives; write everything into a temporary folder
beside ``out`` and rename it at the end, so a failed or interrupted run leaves nothing behind.

Output layout (read by ``rrsis-geo train`` / ``evaluate``, ``--format refsegrs``):

    images/<id>.tif        chip RGB uint8 (hard links: the sentences of one chip share it)
    masks/<id>.tif         referent mask, 255 = referent (empty for absent sentences)
    union_masks/<id>.tif   every object of the named class in the chip
    output_phrase_<split>.txt   "<id> <sentence>" per line
    metadata.jsonl         one row per sentence: type, category, needs_disambiguation, chip
                           transform and CRS, feature ids, attributes, template, block
    dataset.json           gsd, chip size, class list, max tokens
    splits.gpkg            layers "blocks" and "chips" with their split (for QGIS)
    summary.json           counts per class, expression type and split
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.errors import BadInputError, UsageError

#: chips with fewer valid (not nodata) pixels than this share are skipped
MIN_VALID_SHARE = 0.9


@dataclass
class BuildOptions:
    """Options of :func:`build_dataset` (CLI flags of the same names)."""

    class_name: str | None = None
    class_field: str | None = None
    class_map: str | None = None
    layer: str | None = None
    box_mask: str = "ellipse"
    buffer: str | None = None
    weights: str | None = None
    chip_size: int | None = None
    gsd: str = "auto"
    stride: int | None = None
    block_size: float | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    absent_fraction: float = 0.1
    #: classes known to be absent from the whole raster (e.g. "building" on a forest
    #: orthophoto): any chip may get a sentence naming one of them, with an empty mask
    absent_classes: tuple[str, ...] = ()
    bands: tuple[int, ...] | str | None = None  # (4, 3, 2) or the text "4,3,2"
    stretch: str = "auto"
    value_range: str | None = None
    seed: int = 0

    def validate(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UsageError("--val-fraction + --test-fraction must be below 1")
        if not 0.0 <= self.absent_fraction <= 0.9:
            raise UsageError(f"--absent-fraction must be between 0 and 0.9, got "
                             f"{self.absent_fraction}")
        if self.chip_size is not None and not 32 <= self.chip_size <= 2048:
            raise UsageError(f"--chip-size must be between 32 and 2048, got {self.chip_size}")
        if self.stride is not None and self.stride < 1:
            raise UsageError(f"--stride must be >= 1, got {self.stride}")
        if self.block_size is not None and not (math.isfinite(self.block_size)
                                                and self.block_size > 0):
            raise UsageError(f"--block-size must be a positive number of metres, got "
                             f"{self.block_size}")


def model_meta(weights: str | None) -> dict[str, Any]:
    """Metadata of the target model (input size, gsd, classes) without loading it."""
    from rrsis_geo.defaults import resolve_weights

    path = resolve_weights(weights)
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            doc = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            from rrsis_geo.errors import WeightsError

            raise WeightsError(f"{side}: not valid JSON ({exc.msg})") from None
        return dict(doc.get("meta") or {})
    # an official FIANet checkpoint: 480 px RefSegRS chips, resolution unknown
    return {"input_size": 480, "classes": "refsegrs", "max_tokens": 20}


def _target_gsd(spec: str, meta: dict[str, Any]) -> float | None:
    s = str(spec).strip().lower()
    if s == "native":
        return None
    if s == "auto":
        return float(meta["gsd"]) if meta.get("gsd") else None
    try:
        v = float(s)
    except ValueError:
        raise UsageError(f"--gsd must be auto, native or metres per pixel, got {spec!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise UsageError(f"--gsd must be a positive number of metres, got {spec!r}")
    return v


def _crs_string(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """float [3, S, S] in [0, 1] -> uint8 [S, S, 3] (what the model sees, quantized)."""
    return np.ascontiguousarray((np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
                                .transpose(1, 2, 0))


def build_dataset(raster: str | os.PathLike[str], labels: list[str | os.PathLike[str]],
                  out: str | os.PathLike[str], opts: BuildOptions | None = None,
                  progress: bool = False, echo=None) -> dict[str, Any]:
    """Build the dataset; returns the summary (also saved as ``summary.json``).

    Raises:
        UsageError: bad options, ``out`` exists and is not empty, its parent is missing.
        BadInputError: unreadable raster/labels, labels outside the raster, no referent.
        WeightsError: the target model's weights are missing.
    """
    opts = opts or BuildOptions()
    opts.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not an empty folder; choose a new --out")
    if not out.parent.exists():
        raise UsageError(f"the parent folder of --out does not exist: {out.parent}")
    if not labels:
        raise UsageError("give at least one label layer")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        summary = _build(str(raster), [str(p) for p in labels], tmp, opts, progress, echo)
        summary["out"] = str(out)
        _write_json(tmp / "summary.json", summary)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _build(raster: str, label_paths: list[str], root: Path, opts: BuildOptions, progress: bool,
           echo) -> dict[str, Any]:
    import rasterio
    from affine import Affine
    from rasterio.features import rasterize
    from shapely import STRtree
    from shapely.affinity import affine_transform
    from shapely.geometry import box
    from tqdm import tqdm

    from rrsis_geo.data.layers.attributes import colour_shares
    from rrsis_geo.data.layers.expressions import ChipObject, absent_expression, chip_expressions
    from rrsis_geo.data.layers.grid import assign_blocks, block_pixels, plan_chips
    from rrsis_geo.data.layers.labels import parse_class_map, read_labels
    from rrsis_geo.geo.radiometry import compute_normalizer
    from rrsis_geo.geo.raster import (
        bounded_gdal_cache, check_for_segmentation, open_raster, parse_bands,
    )
    from rrsis_geo.geo.workgrid import make_work_grid
    from rrsis_geo.geo.tiling import make_tile, read_tile

    say = echo or (lambda s: None)
    meta = model_meta(opts.weights)
    info = open_raster(raster)
    check_for_segmentation(info)
    bands = parse_bands(opts.bands, info)
    target = _target_gsd(opts.gsd, meta)
    grid = make_work_grid(info, target)
    res_m = float(grid.res_m or info.ground_resolution_m())
    chip = int(opts.chip_size or meta.get("input_size") or 192)
    stride = int(opts.stride or max(1, chip // 2))
    if stride > chip:
        raise UsageError(f"--stride ({stride}) must not exceed the chip size ({chip})")
    if grid.width < chip or grid.height < chip:
        raise BadInputError(f"{raster}: {grid.width} x {grid.height} pixels at {res_m:.3g} m "
                            f"is smaller than one {chip} px chip; use a smaller --chip-size or "
                            "a finer --gsd")
    cmap = parse_class_map(opts.class_map)
    labels = read_labels(label_paths, raster, info.crs, info.transform,
                         class_name=opts.class_name, class_field=opts.class_field,
                         class_map=cmap, layer=opts.layer, box_mask=opts.box_mask,
                         buffer=opts.buffer)
    left, bottom, right, top = info.bounds
    extent = box(left, bottom, right, top)
    labels = [lab for lab in labels if lab.geometry.intersects(extent)]
    if not labels:
        raise BadInputError("the labels do not overlap the raster (check their CRS and extent)")
    classes = sorted({lab.category for lab in labels})

    from rrsis_geo.text.scene_words import CLASS_SYNONYMS

    known = set(_model_classes(meta))
    for cat in classes:
        if cat not in known:
            hint = (f" (or --class-map {cat}={CLASS_SYNONYMS[cat]})" if cat in CLASS_SYNONYMS
                    else "")
            say(f"rrsis-geo: warning: class {cat!r} is not in the model's class list; "
                f"fine-tuning learns it as a new class word{hint}")
    inv = ~grid.transform
    cents = []
    for lab in labels:
        c = lab.geometry.centroid
        col, row = inv @ (c.x, c.y)
        cents.append((row, col))
    cents_arr = np.asarray(cents, float)
    rng = np.random.default_rng(opts.seed)
    if opts.block_size is None:
        block_px = chip
    else:
        block_px = block_pixels(opts.block_size, res_m, chip)
    layout = assign_blocks(grid.height, grid.width, block_px, cents_arr, opts.val_fraction,
                           opts.test_fraction, rng)
    # chips must touch the labelled area (outside it, objects may exist unlabelled)
    lx0, ly0, lx1, ly1 = (min(lab.geometry.bounds[0] for lab in labels),
                          min(lab.geometry.bounds[1] for lab in labels),
                          max(lab.geometry.bounds[2] for lab in labels),
                          max(lab.geometry.bounds[3] for lab in labels))
    cA, rA = inv @ (lx0, ly1)
    cB, rB = inv @ (lx1, ly0)
    region = (int(math.floor(min(rA, rB))), int(math.floor(min(cA, cB))),
              int(math.ceil(max(rA, rB))), int(math.ceil(max(cA, cB))))
    chips = plan_chips(layout, grid.height, grid.width, chip, stride, region)
    if not chips:
        raise BadInputError(f"no {chip} px chip fits in the labelled area's blocks; use a "
                            "smaller --chip-size or --block-size, or lower the val/test "
                            "fractions")

    geoms = [lab.geometry for lab in labels]
    tree = STRtree(geoms)
    px_area = abs(grid.transform.a * grid.transform.e)
    normalizer = compute_normalizer(raster, bands, value_range=opts.value_range,
                                    stretch=opts.stretch)
    for sub in ("images", "masks", "union_masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    crs_s = _crs_string(info.crs)
    records: list[dict[str, Any]] = []
    chip_rows: list[dict[str, Any]] = []
    absent_cands: dict[str, list[tuple[Any, str]]] = {"train": [], "val": [], "test": []}
    n_positive = Counter()

    def chip_transform(c) -> Affine:
        return grid.transform @ Affine.translation(c.col, c.row)

    def chip_image(src, c, index):
        tile = make_tile(index, c.row, c.col, chip, grid)
        img, valid = read_tile(src, info, grid, tile, bands, normalizer)
        return img, valid

    with bounded_gdal_cache(), rasterio.open(raster) as src:
        bar = tqdm(total=len(chips), desc="dataset", unit="chip",
                   disable=None if progress else True, leave=False)
        for ci, c in enumerate(chips):
            bar.update(1)
            t = chip_transform(c)
            x0, y0 = t @ (0, 0)
            x1, y1 = t @ (chip, chip)
            cbox = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            hits = tree.query(cbox, predicate="intersects")
            img, valid = chip_image(src, c, ci)
            if valid.mean() < MIN_VALID_SHARE:
                continue
            objs = []
            tinv = ~t
            to_px = [tinv.a, tinv.b, tinv.d, tinv.e, tinv.xoff, tinv.yoff]
            for k in sorted(int(h) for h in hits):
                lab = labels[k]
                m = rasterize([(lab.geometry, 1)], out_shape=(chip, chip), transform=t,
                              fill=0, dtype="uint8").astype(bool)
                objs.append(ChipObject(lab.fid, lab.category, m, lab.geometry.area / px_area,
                                       not lab.geometry.within(cbox),
                                       affine_transform(lab.geometry, to_px)))
            rgb = _to_uint8(img)
            if objs:
                cover = np.sum([o.mask for o in objs], axis=0)
                for o in objs:
                    o.colours = colour_shares(rgb, o.mask & (cover == 1))
            exprs = chip_expressions(objs, rng)
            present = {o.category for o in objs}  # touching the chip at all counts
            for cat in dict.fromkeys((*classes, *opts.absent_classes)):
                if cat not in present:
                    absent_cands[c.split].append((c, cat))
            chip_rows.append({"chip": c.id, "split": c.split, "block": c.block,
                              "row": c.row, "col": c.col, "objects": len(objs),
                              "expressions": len(exprs), "geometry": cbox})
            if exprs:
                n_positive[c.split] += len(exprs)
                records += _write_chip(root, c, t, rgb, exprs, res_m, crs_s, chip)
        bar.close()
        if not records:
            raise BadInputError("no chip holds a referent: the labels are too small, too "
                                 "crowded to describe uniquely, or outside the usable chips")
        # absent negatives: share F of all sentences, per split
        f = opts.absent_fraction
        for split, cands in absent_cands.items():
            want = int(round(f / (1.0 - f) * n_positive[split])) if f > 0 else 0
            if not want or not cands:
                continue
            picks = rng.permutation(len(cands))[:want]
            by_chip: dict[str, tuple[Any, list[str]]] = {}
            for i in sorted(int(p) for p in picks):
                c, cat = cands[i]
                by_chip.setdefault(c.id, (c, []))[1].append(cat)
            for ci, (c, cats) in enumerate(by_chip.values()):
                img, _ = chip_image(src, c, ci)
                exprs = [absent_expression(cat, (chip, chip)) for cat in cats]
                records += _write_chip(root, c, chip_transform(c), _to_uint8(img), exprs, res_m,
                                       crs_s, chip, suffix="n")
    have = {r["split"] for r in records}
    wanted = {"train": True, "val": opts.val_fraction > 0, "test": opts.test_fraction > 0}
    for split in ("train", "val", "test"):
        if wanted[split] and split not in have:
            say(f"rrsis-geo: warning: no {split} sentence: the labelled area is too small for "
                f"{chip} px chips with a one-chip gutter between splits; use a smaller "
                "--chip-size or --block-size, or lower --val-fraction/--test-fraction")
    _write_index(root, records)
    _write_splits(root, layout, grid, chip_rows, info.crs)
    base = _model_classes(meta)
    _write_json(root / "dataset.json", {
        "generator": "rrsis-geo dataset build", "format": "refsegrs", "gsd": res_m,
        "chip_size": chip, "classes": base + [c for c in classes if c not in base],
        "max_tokens": int(meta.get("max_tokens") or 20),
        "raster": os.path.abspath(raster), "labels": [os.path.abspath(p) for p in label_paths],
    })
    return _summary(records, chip_rows, layout, labels, res_m, chip, stride, block_px, raster,
                    opts)


def _model_classes(meta: dict[str, Any]) -> list[str]:
    """The target model's class phrases (its metadata list, or a named list)."""
    model_classes = meta.get("classes") or "refsegrs"
    if isinstance(model_classes, str):  # a list name: importing the text package loads torch
        from rrsis_geo.text.classes import resolve_classes

        return list(resolve_classes(model_classes))
    return [str(c) for c in model_classes]


def _write_chip(root: Path, c, t, image: np.ndarray, exprs, res_m: float, crs_s: str,
                chip: int, suffix: str = "") -> list[dict[str, Any]]:
    from rrsis_geo.data.synth.chips import write_plain_tif

    rows = []
    first: Path | None = None
    for k, e in enumerate(exprs):
        rid = f"{c.id}_{suffix}{k:03d}"
        ipath = root / "images" / f"{rid}.tif"
        if first is None:
            write_plain_tif(ipath, image, deflate=False)
            first = ipath
        else:
            try:
                os.link(first, ipath)
            except OSError:
                shutil.copyfile(first, ipath)
        write_plain_tif(root / "masks" / f"{rid}.tif", e.mask.astype(np.uint8) * 255, True)
        write_plain_tif(root / "union_masks" / f"{rid}.tif", e.union.astype(np.uint8) * 255,
                         True)
        rows.append({
            "id": rid, "split": c.split, "expression": e.text, "category": e.category,
            "type": e.type, "needs_disambiguation": bool(e.needs_disambiguation),
            "image": f"images/{rid}.tif", "mask": f"masks/{rid}.tif",
            "union_mask": f"union_masks/{rid}.tif", "gsd": res_m, "size": chip,
            "chip": c.id, "block": c.block, "transform": [float(v) for v in list(t)[:6]],
            "crs": crs_s, "feature_ids": list(e.feature_ids), "template": e.template,
            "attributes": e.details,
        })
    return rows


def _write_index(root: Path, records: list[dict[str, Any]]) -> None:
    by_split: dict[str, list[str]] = {}
    for r in records:
        by_split.setdefault(r["split"], []).append(f"{r['id']} {r['expression']}\n")
    for split, lines in by_split.items():
        (root / f"output_phrase_{split}.txt").write_text("".join(lines), encoding="utf-8")
    with open(root / "metadata.jsonl", "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def _write_splits(root: Path, layout, grid, chip_rows, crs) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    rows = []
    for r in range(layout.n_rows):
        for c in range(layout.n_cols):
            r0, c0 = r * layout.block_px, c * layout.block_px
            r1 = min(grid.height, r0 + layout.block_px)
            c1 = min(grid.width, c0 + layout.block_px)
            xa, ya = grid.transform @ (c0, r0)
            xb, yb = grid.transform @ (c1, r1)
            rows.append({"block": layout.block_id(r, c), "split": str(layout.split[r, c]),
                         "objects": int(layout.objects[r, c]),
                         "geometry": box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))})
    path = root / "splits.gpkg"
    gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_file(path, layer="blocks",
                                                                 engine="pyogrio")
    if chip_rows:
        gpd.GeoDataFrame(chip_rows, geometry="geometry", crs=crs).to_file(
            path, layer="chips", engine="pyogrio", mode="a")


def _summary(records, chip_rows, layout, labels, res_m, chip, stride, block_px, raster,
             opts) -> dict[str, Any]:
    def count(key):
        out: dict[str, dict[str, int]] = {}
        for r in records:
            out.setdefault(r["split"], Counter())[r[key]] += 1
        return {s: dict(sorted(v.items())) for s, v in sorted(out.items())}

    splits = Counter(r["split"] for r in records)
    chips_used = {r["chip"] for r in records}
    chips_per_split = Counter(cr["split"] for cr in chip_rows if cr["chip"] in chips_used)
    blocks = Counter(str(s) for s in layout.split.ravel())
    return {
        "raster": str(raster), "gsd": res_m, "chip_size": chip, "stride": stride,
        "block_size_m": block_px * res_m, "seed": opts.seed,
        "labels": len(labels),
        "classes": dict(sorted(Counter(lab.category for lab in labels).items())),
        "sentences": dict(sorted(splits.items())), "total": len(records),
        "chips": dict(sorted(chips_per_split.items())),
        "blocks": dict(sorted(blocks.items())),
        "per_type": count("type"), "per_class": count("category"),
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable summary lines (printed by the CLI)."""
    lines = [f"{s['total']} sentences in {sum(s['chips'].values())} chips "
             f"({s['chip_size']} px at {s['gsd']:.3g} m, blocks {s['block_size_m']:.0f} m) from "
             f"{s['labels']} labels -> {s.get('out', '')}"]
    for split in ("train", "val", "test"):
        if split not in s["sentences"]:
            lines.append(f"  {split}: none")
            continue
        types = ", ".join(f"{k} {v}" for k, v in s["per_type"].get(split, {}).items())
        cls = ", ".join(f"{k} {v}" for k, v in s["per_class"].get(split, {}).items())
        lines.append(f"  {split}: {s['sentences'][split]} sentences, {s['chips'].get(split, 0)} "
                     f"chips, {s['blocks'].get(split, 0)} blocks; types: {types}; classes: {cls}")
    return "\n".join(lines)
