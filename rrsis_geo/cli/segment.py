"""``rrsis-geo segment``: one raster + one sentence → GeoPackage polygons of the referred object."""

from __future__ import annotations

import click

from rrsis_geo.cli.options import device_option, handle_errors, weights_option


@click.command("segment")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-e", "--expression", required=True,
              help='The referring sentence, e.g. "the red building in the upper left".')
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output vector file: .gpkg (GeoPackage) or .geojson.")
@weights_option
@device_option
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Autocast precision of the forward pass (auto: bf16 on "
              "capable GPUs, fp32 on CPU).")
@click.option("--tile-size", type=int, default=None,
              help="Tile size in pixels of the model grid. Default: the model's input size.")
@click.option("--overlap", type=int, default=None, help="Tile overlap in pixels. Default: tile/4.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Tiles per forward.")
@click.option("--bands", default=None,
              help="Three band numbers for R,G,B, e.g. 4,3,2. Default: the raster's RGB colour "
              "interpretation, else 1,2,3.")
@click.option("--value-range", default=None,
              help='Radiometric range "MIN,MAX" for all bands instead of the automatic '
              "2-98 %% percentile stretch.")
@click.option("--gsd", default="auto", show_default=True,
              help="Ground resolution the model sees: auto (the model's training resolution when "
              "known), native, or metres per pixel.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Probability threshold of the referent mask.")
@click.option("--min-area", type=float, default=0.0, show_default=True,
              help="Drop polygons smaller than this many m².")
@click.option("--simplify", type=float, default=1.0, show_default=True,
              help="Simplification tolerance in pixels (0 = exact pixel edges).")
@click.option("--mode", type=click.Choice(["single", "all"]), default="single", show_default=True,
              help="single: the one referred object; all: every object above --min-score "
              "(plural sentences).")
@click.option("--max-objects", type=int, default=None, help="Keep at most this many objects.")
@click.option("--min-score", type=float, default=0.5, show_default=True,
              help="Objects scoring below this are not reported (none left = 'no target').")
@click.option("--prob-raster", type=click.Path(dir_okay=False), default=None,
              help="Also write the probability mosaic as a Cloud-Optimized GeoTIFF.")
@click.option("--layer", default="referred_objects", show_default=True,
              help="Layer name in the GeoPackage.")
@click.option("--progress", type=click.Choice(["bar", "jsonl", "none"]), default="bar",
              show_default=True, help="bar: tqdm on stderr; jsonl: JSON lines on stdout.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from the tiles already on disk.")
@handle_errors
def command(input, expression, output, weights, device, precision, tile_size, overlap,
            batch_size, bands, value_range, gsd, threshold, min_area, simplify, mode,
            max_objects, min_score, prob_raster, layer, progress, resume):
    """Find the object EXPRESSION refers to in the raster INPUT; write polygons to OUTPUT.

    \b
    Example:
      rrsis-geo segment scene.tif -e "the red building in the upper left" -o found.gpkg
    """
    from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
    from rrsis_geo.progress import Reporter

    opts = SegmentOptions(tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                          bands=bands, value_range=value_range, gsd=gsd, threshold=threshold,
                          min_area=min_area, simplify=simplify, mode=mode,
                          max_objects=max_objects, min_score=min_score, prob_raster=prob_raster,
                          resume=resume, layer=layer)
    rep = Reporter(progress)
    result = segment_raster(input, expression, output, opts, reporter=rep, weights=weights,
                            device=device, precision=precision)
    rep.result(result)
