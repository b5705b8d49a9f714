"""``rrsis-geo dataset``: build a referring-segmentation dataset from a raster and label layers."""

from __future__ import annotations

import click

from rrsis_geo.cli import types
from rrsis_geo.cli.options import handle_errors, weights_option


@click.group(name="dataset")
def dataset() -> None:
    """Referring datasets of your own imagery, made from GIS label layers."""


@dataset.command("build")
@click.argument("raster", type=str)
@click.argument("labels", nargs=-1, required=True, type=str)
@click.option("--out", "out", required=True, type=str,
              help="Output folder (must not exist or be empty).")
@click.option("--class", "class_name", default=None,
              help="One class name for every feature of the layers (e.g. tree).")
@click.option("--class-field", default=None,
              help="Field holding each feature's class (deepforest CSVs: 'label' by default).")
@click.option("--class-map", default=None,
              help='Rename classes, "user=model,...", e.g. "Tree=tree,house=building". Class '
              "names are lower-cased first.")
@click.option("--layer", default=None, help="Layer name in multi-layer files (default: first).")
@click.option("--box-mask", type=click.Choice(["ellipse", "box"]), default="ellipse",
              show_default=True,
              help="Mask of a pixel box from a deepforest CSV: the inscribed ellipse (tree "
              "crowns) or the box itself.")
@click.option("--buffer", default=None,
              help="Metres to buffer lines and points into areas: METRES for all, or "
              "class=METRES,... per class.")
@weights_option
@click.option("--chip-size", type=int, default=None,
              help="Chip side in pixels. Default: the model's input size.")
@click.option("--gsd", default="auto", show_default=True,
              help="Ground resolution of the chips: auto (the model's training resolution, as "
              "segment does), native, or metres per pixel.")
@click.option("--stride", type=int, default=None,
              help="Stride of train chips in pixels (overlap only inside train). Default: half "
              "a chip.")
@click.option("--block-size", type=float, default=None,
              help="Side of the split blocks in metres, rounded to whole chips. Default: one "
              "chip.")
@click.option("--val-fraction", type=float, default=0.15, show_default=True,
              help="Share of the labelled objects whose blocks go to val.")
@click.option("--test-fraction", type=float, default=0.15, show_default=True,
              help="Share of the labelled objects whose blocks go to test.")
@click.option("--absent-fraction", type=float, default=0.1, show_default=True,
              help="Share of sentences that name a class absent from their chip (empty mask).")
@click.option("--absent-class", "absent_classes", multiple=True,
              help="A class known to be absent from the whole raster (repeatable), e.g. "
              "--absent-class building on a forest orthophoto: absent sentences may name it on "
              "any chip, so a scene where every chip shows the labelled class still gets "
              "negatives.")
@click.option("--bands", type=types.BANDS, default=None, metavar="TEXT",
              help="Three band numbers for R,G,B (as in segment).")
@click.option("--stretch", type=click.Choice(["auto", "joint", "per-band", "none"]),
              default="auto", show_default=True, help="Radiometric scaling (as in segment).")
@click.option("--value-range", default=None, help='"MIN,MAX" instead of --stretch.')
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the block split and the sentence choices.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr (when it is a terminal).")
@handle_errors
def build(raster, labels, out, class_name, class_field, class_map, layer, box_mask, buffer,
          weights, chip_size, gsd, stride, block_size, val_fraction, test_fraction,
          absent_fraction, absent_classes, bands, stretch, value_range, seed, progress) -> None:
    """Build a referring dataset in OUT from RASTER and the label layers LABELS.

    LABELS are vector files in any CRS and format GDAL reads (polygons; lines and points with
    --buffer) or CSVs of pixel boxes in deepforest's layout
    (image_path,xmin,ymin,xmax,ymax,label; pixel coordinates from the raster's top-left
    corner). The labels must be complete
    where they are: chips only cover the labels' extent, and an unlabelled object there would
    be taught as background.

    Writes the RefSegRS layout that train and evaluate read (images/, masks/, union_masks/,
    output_phrase_{train,val,test}.txt), metadata.jsonl, dataset.json, splits.gpkg (blocks and
    chips with their split) and summary.json.

    \b
    Example:
      rrsis-geo dataset build ortho.tif crowns.csv --box-mask ellipse --out trees_ds
      rrsis-geo dataset build ortho.tif buildings.gpkg --class building --out bld_ds
    """
    from rrsis_geo.data.layers import BuildOptions, build_dataset, format_summary
    from rrsis_geo.safety import check_outputs

    # before any work: --out is not an input and can be created (the folder rule is checked
    # by build_dataset)
    check_outputs([("raster", raster), ("--weights", weights)]
                  + [("label layer", p) for p in labels], [("--out", out)], folders_ok=[out])
    opts = BuildOptions(
        class_name=class_name, class_field=class_field, class_map=class_map, layer=layer,
        box_mask=box_mask, buffer=buffer, weights=weights, chip_size=chip_size, gsd=gsd,
        stride=stride, block_size=block_size, val_fraction=val_fraction,
        test_fraction=test_fraction, absent_fraction=absent_fraction,
        absent_classes=tuple(c.strip().lower() for c in absent_classes if c.strip()), bands=bands,
        stretch=stretch, value_range=value_range, seed=seed)
    echo = lambda s: click.echo(s, err=True)  # noqa: E731 - info and warnings on stderr
    summary = build_dataset(raster, list(labels), out, opts, progress=progress, echo=echo)
    click.echo(format_summary(summary), err=True)


command = dataset
