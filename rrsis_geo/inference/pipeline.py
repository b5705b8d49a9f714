"""Segment a whole raster: tiles → model → blended probability mosaic → scene-level selection → polygons.

Data flows one way (docs/architecture.md, section "Data flow"): ``geo.raster`` describes the
raster and ``geo.radiometry`` normalizes it once,
``geo.tiling`` plans and reads tiles, the model runs per batch of tiles with the sentence encoded once,
``geo.stitch`` blends tile probabilities on disk, ``inference.scene`` picks the referred object(s) and
``geo.vectorize`` / ``geo.output`` write GIS polygons atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from rrsis_geo.errors import BadInputError, OutOfMemoryError, UsageError, WeightsError
from rrsis_geo.inference.device import is_oom
from rrsis_geo.inference.segmenter import Segmenter
from rrsis_geo.inference.tiles import TileReader
from rrsis_geo.option_text import (Bands, Count, Gsd, Mode, parse_band_list, parse_batch_size,
                                   parse_check_budget, parse_gsd, parse_mode, parse_roi_value)
from rrsis_geo.progress import Reporter

log = logging.getLogger(__name__)


@dataclass
class SegmentOptions:
    """Everything ``rrsis-geo segment`` can tune besides input, expression and output."""

    tile_size: int | None = None  # work-grid pixels; None = the model's input size
    overlap: int | None = None  # None = a quarter of the tile
    #: tiles per forward, or "auto": 4 on CPU, on a GPU from its free memory
    #: (inference.device.batch_size_from_memory)
    batch_size: Count | str = "auto"
    #: band indexes for R, G, B (3, or 1 shown as gray); None = RGB colour interpretation,
    #: else 1,2,3. The text "4,3,2" is accepted too (parsed by ``validate``).
    bands: Bands | str | None = None
    stretch: str = "auto"  # auto | joint | per-band | none (see geo.radiometry.compute_normalizer)
    value_range: str | None = None  # "MIN,MAX" instead of the stretch
    gsd: Gsd | str = "auto"  # auto | native | metres per pixel (text accepted)
    threshold: float = 0.5
    min_area: float = 0.0  # m²
    simplify: float = 1.0  # pixels of the work grid
    mode: Mode = "single"
    max_objects: int | None = None
    min_score: float = 0.5
    prob_raster: str | None = None
    resume: bool = False
    layer: str = "referred_objects"
    global_pass: bool = True
    class_check: bool = True  # candidates checked against the model's other classes
    object_classifier: bool = True  # ... and by the weights' object classifier, if any
    #: the class check's cost cap, in tile-sized windows through the model (a smaller window
    #: counts for its share of a tile's pixels), or "auto": scaled with the raster's tiles
    #: (inference.scene.auto_check_budget)
    check_budget: Count | str = "auto"
    #: "XMIN,YMIN,XMAX,YMAX" in the raster's CRS (or those bounds as a tuple), a WKT polygon,
    #: GeoJSON text or a vector file
    roi: Bounds | str | None = None
    driver: str | None = None  # OGR driver of the output; None = from its extension
    dst_crs: str | None = None  # CRS of the written polygons; None = the raster's
    #: metres per pixel of a raster without a CRS (geo.localframe); None = the model's resolution
    pixel_size: float | None = None
    # create | overwrite | append (see geo.output.write_layer). The CLI passes create unless
    # --overwrite/--append (an existing output is refused, as rio does); library callers
    # (bench scripts, segment-many) keep replacing their own outputs
    write_mode: str = "overwrite"

    def validate(self) -> None:
        """Check every option up front (before the raster or the model is opened)."""
        self.batch_size = parse_batch_size(self.batch_size)
        if not (math.isfinite(self.threshold) and 0.0 < self.threshold < 1.0):
            raise UsageError("--threshold must be between 0 and 1")
        for name, value in (("--min-area", self.min_area), ("--simplify", self.simplify)):
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{name} must be a finite number, not negative (got {value})")
        if not (math.isfinite(self.min_score) and 0.0 <= self.min_score <= 1.0):
            raise UsageError(f"--min-score must be between 0 and 1 (got {self.min_score})")
        self.mode = parse_mode(self.mode)
        if self.max_objects is not None and self.max_objects < 1:
            raise UsageError("--max-objects must be at least 1")
        self.check_budget = parse_check_budget(self.check_budget)
        if self.tile_size is not None and self.tile_size < 32:
            raise UsageError("--tile-size must be at least 32 pixels")
        if self.overlap is not None and (self.overlap < 0 or (
                self.tile_size is not None and self.overlap >= self.tile_size)):
            raise UsageError("--overlap must be at least 0 and smaller than --tile-size")
        self.gsd = parse_gsd(self.gsd)
        self.bands = parse_band_list(self.bands)
        roi = parse_roi_value(self.roi)
        if isinstance(roi, tuple):  # the run reads bounds as text (its resume key holds them)
            roi = self.roi if isinstance(self.roi, str) else ",".join(repr(v) for v in roi)
        self.roi = roi
        layer = self.layer or ""
        if not layer.strip() or layer.lower().startswith("gpkg") or any(
                ord(c) < 32 or ord(c) == 127 for c in layer):
            raise UsageError(f"--layer {layer!r}: a layer name must not be empty, start with "
                             "'gpkg' (reserved by GeoPackage) or hold control characters")
        if self.write_mode not in ("create", "overwrite", "append"):
            raise UsageError("write mode must be create, overwrite or append")
        if self.dst_crs is not None:
            from rasterio.crs import CRS

            try:
                CRS.from_user_input(self.dst_crs)
            except Exception:  # noqa: BLE001 - CRSError and friends
                raise UsageError(f"--dst-crs {self.dst_crs!r}: not a CRS (e.g. EPSG:4326, "
                                 "a WKT or PROJ string)") from None
        if self.pixel_size is not None and not (math.isfinite(self.pixel_size)
                                                and self.pixel_size > 0):
            raise UsageError(f"--pixel-size must be a positive number of metres, got "
                             f"{self.pixel_size}")
        if self.value_range is not None:
            from rrsis_geo.geo.radiometry import parse_value_range

            parse_value_range(self.value_range)


def _run_key(input_path: str, expression: str, opts: SegmentOptions, seg: Segmenter) -> str:
    from rrsis_geo.geo.sources import is_local

    # a remote raster has no mtime here: its path stands for it (a changed object at the same
    # URL is not detected by --resume)
    st = os.stat(input_path) if is_local(input_path) else None
    wst = os.stat(seg.weights_path) if seg.weights_path else None
    blob = json.dumps({
        "input": os.path.abspath(input_path) if st else input_path,
        "size": st.st_size if st else None, "mtime": st.st_mtime_ns if st else None,
        "expr": expression.strip(), "weights": seg.weights_path,
        "wmtime": wst.st_mtime_ns if wst else None,
        "opts": {k: v for k, v in asdict(opts).items()
                 if k in ("tile_size", "overlap", "bands", "stretch", "value_range", "gsd",
                          "roi", "pixel_size")},
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def work_dir_for(output: str | os.PathLike) -> Path:
    """Per-output scratch folder (tile accumulator, manifest). Kept for ``--resume``."""
    out = Path(output)
    return out.with_name(out.name + ".rrsis-work")


def _target_resolution(opts: SegmentOptions, seg: Segmenter) -> float | None:
    if opts.gsd == "native":
        return None
    if opts.gsd == "auto":
        return float(seg.gsd) if seg.gsd else None
    return float(opts.gsd)


def segment_raster(input_path: str | os.PathLike, expression: str | Sequence[str],
                   output: str | os.PathLike,
                   opts: SegmentOptions | None = None, segmenter: Segmenter | None = None,
                   reporter: Reporter | None = None, weights: str | None = None,
                   device: str = "auto", precision: str = "auto",
                   compile: bool = False) -> dict[str, Any]:
    """Run the whole pipeline; returns the result payload (outputs, objects, timings...).

    ``expression`` may be a list of sentences: each tile is then read and normalized once and
    goes through the model for every sentence (the text-free part of the forward once, where
    the model allows it); each sentence has its own probability accumulator on disk and its own
    scene-level selection, and all the objects go to one layer told apart by ``expression``.

    ``weights``, ``device``, ``precision`` and ``compile`` build the model when no
    ``segmenter`` is given (see :class:`~rrsis_geo.inference.segmenter.Segmenter`).

    Before anything is read or loaded: the options, the sentences and the outputs are checked
    (an output is never an input or another output, its folder is writable) and the scratch
    folder is claimed (ours alone, locked against a concurrent run on the same output).
    """

    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        # a raster without a CRS is read in pixel coordinates, and the run says so itself
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        return _segment_raster(input_path, expression, output, opts, segmenter, reporter,
                               weights, device, precision, compile)


def _segment_raster(input_path, expression, output, opts, segmenter, reporter, weights, device,
                    precision, compile) -> dict[str, Any]:
    from rrsis_geo.geo.raster import check_for_segmentation, open_raster, parse_bands
    from rrsis_geo.safety import Scratch, check_expression, check_outputs, os_error_message

    t_start = time.perf_counter()
    opts = opts or SegmentOptions()
    opts.validate()
    rep = reporter or Reporter("none")
    input_path, output = str(input_path), str(output)
    expressions = [expression] if isinstance(expression, str) else list(expression)
    if not expressions:
        raise UsageError("give a sentence with -e (or --expressions FILE)")
    for e in expressions:
        check_expression(e)
    if len(expressions) > 1 and opts.prob_raster:
        raise UsageError("--prob-raster takes one expression")
    # nothing is read, loaded or written before the outputs are known to be safe to write
    inputs: list[Any] = [("input", input_path)]
    if opts.roi and os.path.exists(opts.roi):
        inputs.append(("--roi file", opts.roi))
    if segmenter is None:
        from rrsis_geo.defaults import resolve_weights

        wpath = resolve_weights(weights)
        inputs += [("weights", wpath), ("model card", wpath.with_suffix(".json"))]
    outs: list[Any] = [("output", output)]
    if opts.prob_raster:
        outs.append(("--prob-raster", opts.prob_raster))
    check_outputs(inputs, outs)
    from rrsis_geo.geo.output import check_vector_output

    check_vector_output(output, driver=opts.driver, layer=opts.layer, mode=opts.write_mode)

    with rep.stage("open"):
        info = open_raster(input_path)
        input_path = info.path  # the GDAL form of a URL (/vsicurl/…, /vsis3/…)
        if info.crs is None:
            # read in pixel coordinates (geo.localframe); options about map coordinates can't
            for name, value in (("--roi", opts.roi), ("--dst-crs", opts.dst_crs)):
                if value:
                    raise UsageError(f"{name} needs a georeferenced raster; {input_path} has "
                                     "no CRS (assign one first, e.g. gdal_edit.py -a_srs)")
        elif opts.pixel_size is not None:
            raise UsageError(f"--pixel-size is for a raster without a CRS; {input_path} has "
                             "one, which gives its pixel size (--gsd sets what the model sees)")
        check_for_segmentation(info, allow_no_crs=True)
        bands = parse_bands(opts.bands, info)
        if opts.roi:
            from rrsis_geo.geo.roi import parse_roi, roi_window as window_of

            window_of(parse_roi(opts.roi, info), info)  # a bad region fails before the model
        if opts.gsd not in ("auto", "native") and info.crs is not None:
            from rrsis_geo.geo.workgrid import make_work_grid

            make_work_grid(info, float(opts.gsd))  # upsampling limit, degenerate grids
        workdir = work_dir_for(output)
        scratch = Scratch.claim(workdir, resume=opts.resume, output=output)
    try:
        def make_segmenter() -> Segmenter:
            return segmenter or Segmenter(weights, device=device, precision=precision,
                                          compile=compile)

        result = _segment_claimed(input_path, expressions, output, opts, make_segmenter, rep,
                                  info, bands, workdir, t_start)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the finished tiles stay for --resume
        scratch.release(keep=True)
        raise
    except BaseException as exc:
        # a --resume that fails keeps the earlier run's tiles; anything else leaves nothing
        scratch.release(keep=opts.resume and not scratch.created)
        msg = os_error_message(exc, workdir.parent) if isinstance(exc, OSError) else None
        if msg:
            from rrsis_geo.errors import OutputError

            raise OutputError(msg) from exc
        raise
    scratch.release(keep=False)
    log.debug("%s: %s object(s), outputs %s", input_path, result.get("objects"),
              result.get("outputs"))
    return result


def _mask_overview(overview, region, info):
    """The overview (``SceneSelector.read_overview``) with the pixels outside ``region`` (a
    ``geo.roi.RegionMask`` on the raster's grid) made nodata, as the tiles have them."""
    from affine import Affine

    from rrsis_geo.geo.roi import RegionMask

    img, valid = overview
    oh, ow = valid.shape
    t = info.transform @ Affine.scale(info.width / ow, info.height / oh)
    return RegionMask(region.polygon, t).apply(img, valid, 0, 0)


def _segment_claimed(input_path, expressions, output, opts, make_segmenter, rep, info, bands,
                     workdir, t_start) -> dict[str, Any]:
    """The run once the outputs are checked and the scratch folder is ours (see above)."""
    from rrsis_geo.geo.radiometry import compute_normalizer
    from rrsis_geo.geo.raster import open_raster
    from rrsis_geo.geo.workgrid import make_work_grid
    from rrsis_geo.geo.stitch import BAND_CACHE_BYTES, ProbAccumulator
    from rrsis_geo.geo.tiling import plan_tiles
    from rrsis_geo.inference.scene import SceneSelector, SceneSource

    with rep.stage("open"):
        seg = make_segmenter()
        seg.encode_many(expressions)  # decouple + encode once, up front (bad ones fail early)

    with rep.stage("normalize"):
        # one radiometric scaling for the whole raster, also when --roi looks at a part of it
        normalizer = compute_normalizer(input_path, bands, value_range=opts.value_range,
                                        stretch=opts.stretch)
        tile_size = int(opts.tile_size or seg.input_size)
        overlap = int(opts.overlap if opts.overlap is not None else tile_size // 4)
        if not 0 <= overlap < tile_size:
            raise UsageError("--overlap must be at least 0 and smaller than --tile-size")
        region = None
        read_path = input_path
        # a raster without a CRS: pixel size from --pixel-size, else the model's resolution;
        # local = (that size, the image's own transform) to map the objects back at the end
        local = None
        if info.crs is None:
            from rrsis_geo.geo.localframe import write_local_vrt

            image_pixel = float(opts.pixel_size or seg.gsd or 1.0)
            rep.message(
                f"{os.path.basename(input_path)} has no CRS: objects are written in its "
                + ("pixel coordinates (x = column, y = row)" if info.transform.is_identity
                   else "geotransform's coordinates") + " without a CRS; "
                + (f"pixels of {image_pixel:g} m (--pixel-size)" if opts.pixel_size else
                   f"its pixel size is unknown, so it is read as it is, as if pixels were "
                   f"{image_pixel:g} m (give --pixel-size for areas in m² and the resolution "
                   "the model was trained at)"))
            local = (image_pixel, info.transform)
            read_path = write_local_vrt(info, image_pixel, workdir / "local.vrt")
            info = open_raster(read_path)
        if opts.roi:
            from rrsis_geo.geo.roi import parse_region, roi_window as window_of, write_window_vrt

            region = parse_region(opts.roi, info)
            roi_window = window_of(region.bounds, info)
            read_path = write_window_vrt(info, roi_window, workdir / "roi.vrt")
            info = open_raster(read_path)
            rep.message(f"region of interest: {info.width} x {info.height} pixels from "
                        f"column {int(roi_window.col_off)}, row {int(roi_window.row_off)}"
                        + (" (outside the polygon: nodata)" if region.polygon is not None
                           else ""))
        grid = make_work_grid(info, _target_resolution(opts, seg))
        tiles = plan_tiles(info, grid, tile_size, overlap)
        mask = None
        if region is not None and region.polygon is not None:
            from rrsis_geo.geo.roi import RegionMask

            mask = RegionMask(region.polygon, grid.transform)

    multi = len(expressions) > 1
    selectors = [SceneSelector(seg, opts, rep, n_tiles=len(tiles)) for _ in expressions]
    # every sentence names a class the model never learned (each says so): nothing the tiles
    # could show would change the answer, unless the probability raster itself was asked for
    refused = (opts.class_check and not opts.prob_raster
               and all(sel.untrained_class(e) for sel, e in zip(selectors, expressions)))
    if refused:
        for sel, e in zip(selectors, expressions):
            sel.refuse_untrained(e)  # says why
    # one accumulator per sentence (its own folder when there are several); their row band
    # caches together stay within 4 x one sentence's, however many sentences
    cache = min(BAND_CACHE_BYTES, 4 * BAND_CACHE_BYTES // len(expressions))
    accs = [ProbAccumulator(workdir / f"expr{i}" if multi else workdir, grid.height, grid.width,
                            tile_size, run_key=_run_key(input_path, e, opts, seg),
                            resume=opts.resume, cache_bytes=cache)
            for i, e in enumerate(expressions)]
    if opts.resume and any(a.n_done for a in accs):
        rep.message(f"resuming: {min(a.n_done for a in accs)} of {len(tiles)} tiles already "
                    "on disk")

    batch_size = seg.resolve_batch_size(opts.batch_size, tile_size)
    seg.compile_for((batch_size, 3, tile_size, tile_size))  # --compile: the tile batches
    n_model_tiles = n_outside = n_reads = 0
    t_model = 0.0
    raster = SceneSource(read_path, info, grid, bands, normalizer)
    crs = info.crs if grid.crs is None else grid.crs
    if refused:
        return _write_outputs(output, [], [], crs, opts,
                              accs, grid, {"tiles": len(tiles), "tile_reads": 0,
                                           "model_tiles": 0, "outside_tiles": 0,
                                           "model_seconds": 0.0},
                              selectors, seg, rep, t_start, len(expressions), local)
    with rep.stage("tiles", total=len(tiles), unit="tile"):
        reader_args = (read_path, info, grid, tiles, bands, normalizer,
                       lambda t: all(a.is_done(t.index) for a in accs))
        tile_exprs = []
        for sel, expression in zip(selectors, expressions):
            tile_expr = sel.tile_expression(grid, expression)
            if tile_expr != " ".join(expression.split()):
                rep.message(f"tiles read: \"{tile_expr}\" (scene-frame words are judged on the "
                            "whole scene)")
            tile_exprs.append(tile_expr)
        prefetch = None
        if any(sel.needs_global_pass(grid) for sel in selectors):
            def prefetch():
                overview = selectors[0].read_overview(raster)
                return overview if mask is None else _mask_overview(overview, region, info)
        reader = TileReader(*reader_args, then=prefetch, region=mask)
        reader.start()
        source = iter(reader)
        pending: list = []

        # sentences the tiles read alike ("the largest pond", "the pond in the north": "the
        # pond") go through the model once
        unique = list(dict.fromkeys(tile_exprs))

        def forward(imgs: np.ndarray) -> list[np.ndarray]:
            """Probabilities [B, H, W] of the batch for each sentence (several sentences: one
            forward for all, see Segmenter.predict_many)."""
            if len(unique) == 1:
                probs = [seg.predict(imgs, seg.encode(unique[0]))]
            else:
                probs = list(seg.predict_many(imgs, seg.encode_many(unique)))
            return [probs[unique.index(e)] for e in tile_exprs]

        def flush() -> None:
            nonlocal batch_size, n_model_tiles, t_model
            while pending:
                chunk = pending[:batch_size]
                imgs = np.stack([c[1] for c in chunk])
                try:
                    t0 = time.perf_counter()
                    probs = forward(imgs)
                    t_model += time.perf_counter() - t0
                    if not all(np.isfinite(p).any() for p in probs):
                        raise WeightsError("the model's output is NaN or infinite for a whole "
                                           "batch of tiles; the weights are unusable (or try "
                                           "--precision fp32)")
                except Exception as exc:
                    if not is_oom(exc):
                        raise
                    if batch_size > 1:
                        batch_size = max(1, batch_size // 2)
                        rep.warn(f"out of memory; retrying with batch size {batch_size}")
                        continue
                    if seg.device.type == "cuda":
                        rep.warn("out of memory on the GPU at batch size 1; falling back to CPU")
                        seg.to_cpu()
                        continue
                    raise OutOfMemoryError("out of memory at batch size 1 on the CPU; "
                                           "try a smaller --tile-size") from exc
                for acc, prob_s in zip(accs, probs):
                    for (tile, _img, valid), prob in zip(chunk, prob_s):
                        if not acc.is_done(tile.index):  # (--resume: done for this sentence)
                            acc.add(prob, valid, tile.row_off, tile.col_off)
                            acc.mark_done(tile.index)
                n_model_tiles += len(chunk)
                del pending[: len(chunk)]
                rep.advance(len(chunk))

        try:
            for kind, tile, img, valid in source:
                if kind == "skip":
                    rep.advance(1)
                    continue
                if kind == "outside" or not valid.any():  # nothing to predict
                    n_reads += kind == "tile"
                    n_outside += kind == "outside"
                    for acc in accs:
                        acc.mark_done(tile.index)
                    rep.advance(1)
                    continue
                n_reads += 1
                pending.append((tile, img, valid))
                if len(pending) >= batch_size:
                    flush()
            flush()
        finally:
            reader.stop.set()
            for acc in accs:  # also on Ctrl-C: the finished tiles of the row band stay resumable
                acc.flush()

    records: list[dict[str, Any]] = []
    geometries: list[Any] = []
    with rep.stage("select"):
        reader.join()  # the overview prefetch (a fraction of a second, overlapping the model)
        overview = reader.then_result
        if overview is None and prefetch is not None and mask is not None:
            overview = prefetch()  # the prefetch failed: read it here (masked like the tiles)
        for i, (sel, acc, expression) in enumerate(zip(selectors, accs, expressions)):
            if multi:
                rep.message(f"expression {i + 1}/{len(expressions)}: {expression.strip()}")
            objects = sel.select(replace(raster, acc=acc), expression, overview=overview)
            if mask is not None:
                objects = _clip_objects(objects, mask, crs, opts.min_area)
            records += [{"expression": expression.strip(), "score": float(o.score),
                         "area_m2": float(o.area_m2), "rank": int(o.rank)} for o in objects]
            geometries += [o.geometry for o in objects]

    return _write_outputs(output, records, geometries, crs, opts, accs, grid, {
        "tiles": len(tiles), "tile_reads": n_reads, "model_tiles": n_model_tiles,
        "outside_tiles": n_outside, "model_seconds": round(t_model, 3)},
        selectors, seg, rep, t_start, len(expressions), local)


def _write_outputs(output, records, geometries, crs, opts, accs, grid, counts, selectors, seg,
                   rep, t_start, n_expressions, local=None) -> dict[str, Any]:
    """Write the vector (and ``--prob-raster``), close the accumulators and return the run's
    summary (``counts``: the tile figures). ``local``: for an image without a CRS, (pixel
    size, the image's own transform): objects and grid go back from the stand-in frame to the
    image's own frame (:mod:`rrsis_geo.geo.localframe`), written without a CRS."""
    from rrsis_geo.geo.output import write_layer
    from rrsis_geo.geo.stitch import write_prob_cog

    if local is not None:
        from rrsis_geo.geo.localframe import image_frame_transform, to_image_frame

        geometries = [to_image_frame(g, *local) for g in geometries]
        grid = replace(grid, transform=image_frame_transform(grid.transform, *local), crs=None)
        crs = None
    outputs: dict[str, str] = {"vector": output}
    with rep.stage("write"):
        if opts.prob_raster:  # first: a failure here must not leave the vector behind
            write_prob_cog(accs[0], grid, opts.prob_raster)
            outputs["prob_raster"] = str(opts.prob_raster)
        try:
            write_layer(output, records, geometries, crs, layer=opts.layer,
                        driver=opts.driver, mode=opts.write_mode, dst_crs=opts.dst_crs)
        except BaseException:
            if opts.prob_raster:  # no half result: the probability raster goes too
                Path(opts.prob_raster).unlink(missing_ok=True)
            raise
    for acc in accs:
        acc.close()
    result = {
        "outputs": outputs,
        "objects": len(records),
        **counts,
        "check_images": sum(s.check_images for s in selectors),
        "check_windows": round(sum(s.check_windows for s in selectors), 3),
        "check_seconds": round(sum(s.check_seconds for s in selectors), 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "device": str(seg.device),
    }
    if n_expressions > 1:
        result["expressions"] = n_expressions
    return result


def _clip_objects(objects, mask, crs, min_area: float):
    """The selected objects clipped to the region's polygon (``RegionMask.clip``): area
    recomputed, those left empty or below ``min_area`` dropped, ranks renumbered."""
    from dataclasses import replace

    from rrsis_geo.geo.vectorize import area_m2

    out = []
    for o in objects:
        geom = mask.clip(o.geometry)
        if geom.is_empty:
            continue
        area = area_m2(geom, crs)
        if area <= 0 or area < min_area:
            continue
        out.append(replace(o, geometry=geom, area_m2=area, rank=len(out) + 1))
    return out
