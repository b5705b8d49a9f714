"""``rrsis-geo segment``: one raster + one sentence → GeoPackage polygons of the referred object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rrsis_geo.cli import types
from rrsis_geo.cli.options import device_option, handle_errors, threads_option, weights_option

# Model, tiling and selection options shared with ``segment-many`` (one definition, one help text).
_SEGMENT_OPTIONS: list[Callable[..., Any]] = [
    weights_option,
    device_option,
    threads_option,
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
                 default="auto", show_default=True,
                 help="Precision of the forward pass: autocast bf16/fp16, or int8 dynamic "
                 "quantization of the Linear layers (CPU only). auto: bf16 on capable GPUs; "
                 "on a CPU with native bf16, bf16 for large models (50 M parameters or more, "
                 "e.g. official weights) if the first batch agrees with fp32 on 99 % of the "
                 "pixels, else fp32 (see README)."),
    click.option("--tile-size", type=int, default=None,
                 help="Tile size in pixels of the model grid. Default: the model's input size."),
    click.option("--overlap", type=int, default=None,
                 help="Tile overlap in pixels. Default: tile/4."),
    click.option("--batch-size", type=types.BATCH_SIZE, default="auto", show_default=True,
                 metavar="auto|N",
                 help="Tiles per forward. auto: 4 on CPU; on a GPU as many as fit 60 % of its "
                 "free memory, at most 32 (halved and retried on out-of-memory)."),
    click.option("--bands", type=types.BANDS, default=None, metavar="TEXT",
                 help="Three band numbers for R,G,B, e.g. 4,3,2. Default: the raster's RGB colour "
                 "interpretation, else 1,2,3."),
    click.option("--stretch", type=click.Choice(["auto", "joint", "per-band", "none"]),
                 default="auto", show_default=True,
                 help="Radiometric scaling, computed once for the whole raster: none = the "
                 "integer type's range (8-bit imagery as the model was trained), joint = one "
                 "2-98 % percentile stretch for all bands (keeps colours), per-band = a stretch "
                 "per band; auto = none for 8-bit, joint otherwise."),
    click.option("--value-range", default=None,
                 help='Radiometric range "MIN,MAX" for all bands instead of --stretch.'),
    click.option("--gsd", type=types.GSD, default="auto", show_default=True, metavar="TEXT",
                 help="Ground resolution the model sees: auto (the model's training resolution "
                 "when known), native, or metres per pixel."),
    click.option("--pixel-size", type=float, default=None, metavar="METRES",
                 help="Ground size of a pixel of a raster without a CRS (a PNG or JPEG export, "
                 "a photo); its objects are written in pixel coordinates (x = column, y = row) "
                 "without a CRS. Default: unknown, the image is read as it is."),
    click.option("--threshold", type=float, default=0.5, show_default=True,
                 help="Probability threshold of the referent mask."),
    click.option("--min-area", type=float, default=0.0, show_default=True,
                 help="Drop polygons smaller than this many m²."),
    click.option("--simplify", type=float, default=1.0, show_default=True,
                 help="Simplification tolerance in pixels (0 = exact pixel edges)."),
    click.option("--mode", type=click.Choice(["single", "all"]), default="single",
                 show_default=True,
                 help="single: the one referred object; all: every object above --min-score "
                 "(plural sentences)."),
    click.option("--max-objects", type=int, default=None, help="Keep at most this many objects."),
    click.option("--min-score", type=float, default=0.5, show_default=True,
                 help="Objects scoring below this are not reported (none left = 'no target')."),
    click.option("--class-check/--no-class-check", default=True, show_default=True,
                 help="Check the best candidates against the model's other classes (one "
                 "window centred on each, one forward per class prompt): a tile that lacks "
                 "the named class paints its nearest look-alike, which this rejects; vehicle "
                 "kinds are also judged by size and shape; a class the model's metadata says it "
                 "was never trained to find is 'no target' (before any tile is read, unless "
                 "--prob-raster is asked for). Applies when the sentence names a "
                 "class of the model."),
    click.option("--object-classifier/--no-object-classifier", default=True,
                 show_default=True,
                 help="In the class check, also ask the object classifier that comes with the "
                 "weights (X.objclass.safetensors beside them; the demo model has one) what "
                 "each candidate is: a look-alike the model scores as high as the named class "
                 "(a tennis court for 'the basketball court') loses. No effect for weights "
                 "without one."),
    click.option("--check-budget", type=types.CHECK_BUDGET, default="auto", show_default=True,
                 metavar="auto|N",
                 help="Most model work the class check may spend, in tile-sized windows (a "
                 "smaller window counts for its share of a tile's pixels). auto: a quarter "
                 "of the raster's tiles, at least 64 windows of the check's own 192-px size, "
                 "at most 64 tiles (the demo model: 64). The check screens "
                 "all classes on the best candidate, then checks the others against the few "
                 "classes the model confuses with the named one."),
    click.option("--layer", default="referred_objects", show_default=True,
                 help="Layer name in a GeoPackage (or SQLite) output; single-layer formats "
                 "name their layer after the file."),
]

def segment_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Apply the options shared by ``segment`` and ``segment-many`` to a click command.

    They are ``--weights``, ``--device``, ``--threads``, ``--precision`` and options named after
    ``SegmentOptions`` fields (``--tile-size`` → ``tile_size``; collect those with
    :func:`options_from`). Values arrive typed (:mod:`rrsis_geo.cli.types`).
    """
    for option in reversed(_SEGMENT_OPTIONS):
        func = option(func)
    return func


def options_from(kwargs: dict[str, Any], **extra: Any):
    """Pop the ``SegmentOptions`` fields out of click's ``kwargs`` into a ``SegmentOptions``."""
    from dataclasses import fields

    from rrsis_geo.inference.pipeline import SegmentOptions

    from rrsis_geo.option_text import parse_band_list

    names = [f.name for f in fields(SegmentOptions) if f.name in kwargs]
    values = {name: kwargs.pop(name) for name in names}
    values["bands"] = parse_band_list(values["bands"])  # checked by its click type already
    return SegmentOptions(**values, **extra)


@click.command("segment")
@click.argument("input", type=str)
@click.option("-e", "--expression", "expressions", multiple=True,
              help='The referring sentence, e.g. "the red building in the upper left". Repeat '
              "it for several sentences: one pass over the raster (each tile read once and run "
              "for all of them), one layer with an expression column.")
@click.option("--expressions", "expressions_file", type=str, default=None,
              help="A UTF-8 text file of sentences, one per line (blank lines and # comments "
              "skipped), instead of or besides -e.")
@click.option("-o", "--output", required=True, type=str,
              help="Output vector file; the format follows the extension: .gpkg, .geojson, "
              ".geojsonl, .shp, .fgb, .kml, .gml, .csv (WKT), .sqlite, .tab, .gpx, or --driver.")
@segment_options
@click.option("--driver", default=None,
              help="OGR driver of the output (e.g. GPKG, FlatGeobuf, GML) instead of the "
              "extension's; any vector format the installed GDAL writes.")
@click.option("--dst-crs", default=None,
              help="Write the polygons in this CRS (e.g. EPSG:4326). Default: the raster's. "
              "area_m2 stays the ellipsoidal area.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output: in a GeoPackage only the layer --layer (other "
              "layers are kept), else the file. Without it, an existing output is refused.")
@click.option("--append", is_flag=True,
              help="Add the features to the existing layer of the output (same fields; "
              "reprojected to its CRS), or add the layer to an existing GeoPackage.")
@click.option("--roi", default=None,
              help="Region of interest: XMIN,YMIN,XMAX,YMAX in the raster's CRS (a rectangle), "
              "a WKT polygon in the raster's CRS, or a vector file (reprojected; GeoJSON text "
              "too). Polygons are a mask: outside them is nodata (tiles not run, polygons "
              "clipped); points or lines give their extent. The run (tiles, overview pass, words "
              "such as 'in the north') covers only the region's extent.")
@click.option("--prob-raster", type=str, default=None,
              help="Also write the probability mosaic as a Cloud-Optimized GeoTIFF (of the "
              "--roi when given).")
@click.option("--progress", type=click.Choice(["bar", "jsonl", "none"]), default="bar",
              show_default=True, help="bar: tqdm on stderr; jsonl: JSON lines on stdout.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run (Ctrl-C, SIGTERM, kill -9) from the tiles "
              "already on disk in OUTPUT.rrsis-work/.")
@click.option("--compile", "compile_model", is_flag=True,
              help="Compile the model for the tile batches (torch.compile; CPU: frozen "
              "weights). The first run compiles for minutes (cached on disk: later runs take "
              "under a minute); each tile then runs faster (measured on CPU: demo model "
              "0.81x, official layout in bf16 0.87x the uncompiled time; see README). Pays "
              "off on large rasters. If compiling fails, the run goes on uncompiled with a "
              "warning.")
@handle_errors
def command(input, expressions, expressions_file, output, weights, device, precision, roi,
            prob_raster, progress, resume, compile_model, driver, dst_crs, overwrite, append,
            **kwargs):
    """Find the object a sentence (-e) refers to in the raster INPUT; write polygons to OUTPUT.

    INPUT is anything GDAL opens: a file, a /vsizip/… or other /vsi… path, an http(s):// URL
    (a Cloud-Optimized GeoTIFF is read with range requests) or s3:// gs:// az:// (GDAL_HTTP_*
    and AWS_* environment variables configure access). An existing OUTPUT is refused unless
    --overwrite or --append.

    Position words ("in the north-east", "on the left") and superlatives ("the largest") refer
    to the whole raster, or to the --roi region: on rasters larger than about one tile, the tiles
    read the sentence without them, and they rank the candidates found in the whole scene. A
    relation to an object of another class the model knows ("near the pond", "left of the bus")
    is judged around each candidate by the class check, and the tiles read the sentence without
    it too.

    \b
    Example:
      rrsis-geo segment scene.tif -e "the red building in the upper left" -o found.gpkg
      rrsis-geo segment scene.tif -e "the largest tank" -o tank.gpkg --roi district.gpkg
      rrsis-geo segment https://example.org/ortho_cog.tif -e "the pond" -o pond.fgb
      rrsis-geo segment scene.tif -e "the pond" -o all.gpkg --layer ponds --overwrite
      rrsis-geo segment scene.tif -e "the pond" -e "the tennis court" -o found.gpkg
    """
    from rrsis_geo.errors import UsageError
    from rrsis_geo.inference.device import set_threads
    from rrsis_geo.inference.pipeline import segment_raster
    from rrsis_geo.progress import Reporter

    set_threads(kwargs.pop("threads"))
    if overwrite and append:
        raise UsageError("--overwrite and --append exclude each other")
    mode = "overwrite" if overwrite else "append" if append else "create"
    opts = options_from(kwargs, prob_raster=prob_raster, resume=resume, roi=roi, driver=driver,
                        dst_crs=dst_crs, write_mode=mode)
    sentences = list(expressions)
    if expressions_file:
        sentences += read_expressions(expressions_file)
    if not sentences:
        raise UsageError("give a sentence with -e (or --expressions FILE)")
    rep = Reporter(progress)
    if compile_model:
        _quiet_compiler_logs()
    # several sentences share the raster reads: one pass over the tiles, one layer
    result = segment_raster(input, sentences if len(sentences) > 1 else sentences[0], output,
                            opts, reporter=rep, weights=weights, device=device,
                            precision=precision, compile=compile_model)
    rep.result(result)


def _quiet_compiler_logs() -> None:
    """--compile: torch's compiler reports graph breaks and toolchain lookups as warnings of its
    own (several lines each); the run says what it does in its own lines, so keep only errors."""
    import logging

    import torch._logging

    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def read_expressions(path: str) -> list[str]:
    """Sentences of an --expressions file: one per line, blank lines and # comments skipped."""
    from rrsis_geo.errors import BadInputError

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"--expressions {path}: cannot read ({exc})") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
