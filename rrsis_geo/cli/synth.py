"""``rrsis-geo synth``: generate referring chips (RefSegRS layout) or a large georeferenced scene."""

from __future__ import annotations

import click
from tqdm import tqdm

from rrsis_geo.cli.options import handle_errors
from rrsis_geo.errors import UsageError


@click.group(name="synth")
def synth() -> None:
    """Generate synthetic aerial referring-expression data (deterministic per seed).

    \b
    Chips represent 0.25 m/px (a car is ~18 x 8 px); scenes use the same scale by default.

    \b
    --realism (chips, scene) closes part of the gap to real imagery; the layout, objects and
    sentences stay the same for a seed, only the pixels change:
      none      the plain procedural look
      textures  photographic ground, canopy, roof, asphalt and water textures from real
                orthophotos (a bank shipped with the package), mixed with the procedural look
      sensor    random sun azimuth/shadow length, slight off-nadir lean (facades), haze,
                exposure, white balance, blur, noise, JPEG; chips whose sentence names no
                colour are sometimes panchromatic (grey)
      all       textures + sensor
    """


@synth.command("chips")
@click.argument("out_dir", type=str)
@click.option("--count", type=int, default=1000, show_default=True, help="Number of chips.")
@click.option("--size", type=int, default=192, show_default=True, help="Chip side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed; use different seeds for train/val/test.")
@click.option("--split", default="train", show_default=True,
              help="Split name: writes output_phrase_<split>.txt (appended to OUT_DIR).")
@click.option("--absent-fraction", type=float, default=0.0, show_default=True,
              help="Share (0-0.9) of negative chips whose sentence names something not in the "
              "chip (empty mask); teaches tile-wise inference to paint nothing.")
@click.option("--realism", type=click.Choice(["none", "textures", "sensor", "all"]),
              default="none", show_default=True,
              help="Realism of the pixels: none, textures (photographic textures), sensor "
              "(acquisition and sensor effects) or all (see `rrsis-geo synth --help`).")
@click.option("--confusable-negatives", type=float, default=0.0, show_default=True,
              help="Share (0-1) of the negative chips' category sentences that name a "
              "look-alike of something the chip shows ('the truck' on a chip with cars only; "
              "car/truck/bus, tennis/basketball court); 0 leaves the chips as they were.")
@handle_errors
def chips(out_dir: str, count: int, size: int, seed: int, split: str,
          absent_fraction: float, realism: str, confusable_negatives: float) -> None:
    """Write COUNT chips to OUT_DIR: images/, masks/, union_masks/, output_phrase_SPLIT.txt,
    metadata.jsonl."""
    from rrsis_geo.data.synth import write_chips
    from rrsis_geo.safety import check_outputs

    check_outputs([], [("OUT_DIR", out_dir)], folders_ok=[out_dir])
    if count < 1:
        raise UsageError(f"--count must be >= 1, got {count}")
    if not 0.0 <= absent_fraction <= 0.9:
        raise UsageError(f"--absent-fraction must be between 0 and 0.9, got {absent_fraction}")
    if not 0.0 <= confusable_negatives <= 1.0:
        raise UsageError("--confusable-negatives must be between 0 and 1, got "
                         f"{confusable_negatives}")
    with tqdm(total=count, desc=f"synth {split}", unit="chip", disable=None) as bar:
        records = write_chips(out_dir, count, size=size, seed=seed, split=split,
                              progress=bar.update, absent_fraction=absent_fraction,
                              realism=realism, confusable=confusable_negatives)
    n_dis = sum(r["needs_disambiguation"] for r in records)
    n_abs = sum(r["type"] == "absent" for r in records)
    click.echo(f"wrote {len(records)} chips to {out_dir} ({n_dis} need disambiguation, "
               f"{n_abs} absent)", err=True)


@synth.command("scene")
@click.argument("out_tif", type=str)
@click.option("--size", type=int, default=4096, show_default=True, help="Scene side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--gsd", type=float, default=None,
              help="Metres per pixel (default 0.25, the chips' scale); objects keep their "
              "metric size.")
@click.option("--targets", "n_targets", type=int, default=6, show_default=True,
              help="Referring expressions with a referent in the scene (1-6).")
@click.option("--absent", "n_absent", type=int, default=2, show_default=True,
              help="Extra expressions naming an object that is not in the scene.")
@click.option("--epsg", type=int, default=32633, show_default=True, help="Projected CRS (UTM).")
@click.option("--no-margin", is_flag=True, help="No irregular nodata margin.")
@click.option("--objects", "with_objects", is_flag=True,
              help="Also write OUT_TIF.objects.gpkg (layer \"objects\"): every object of the "
              "scene with its category, a label layer for `rrsis-geo dataset build`.")
@click.option("--realism", type=click.Choice(["none", "textures", "sensor", "all"]),
              default="none", show_default=True,
              help="Realism of the pixels: none, textures (photographic textures), sensor "
              "(acquisition and sensor effects) or all (see `rrsis-geo synth --help`).")
@click.option("--bands", type=click.Choice(["rgb", "rgbn", "pan"]), default="rgb",
              show_default=True,
              help="Bands of OUT_TIF: rgb, rgbn (RGB + a modelled near-infrared band: "
              "vegetation bright, water dark) or pan (one panchromatic band; sentences may "
              "still name colours, so use it for class and position words).")
@handle_errors
def scene(out_tif: str, size: int, seed: int, gsd: float | None, n_targets: int, n_absent: int,
          epsg: int, no_margin: bool, with_objects: bool, realism: str, bands: str) -> None:
    """Write a georeferenced GeoTIFF OUT_TIF and OUT_TIF.targets.gpkg (layer "targets")."""
    import math

    from rrsis_geo.data.synth import CHIP_GSD, objects_path, write_scene
    from rrsis_geo.safety import check_outputs

    if gsd is not None and not (math.isfinite(gsd) and gsd > 0):
        raise UsageError(f"--gsd must be a positive number of metres, got {gsd}")
    check_outputs([], [("OUT_TIF", out_tif), ("targets layer", f"{out_tif}.targets.gpkg")]
                  + ([("objects layer", str(objects_path(out_tif)))] if with_objects else []))
    with tqdm(total=3, desc="synth scene", unit="step", disable=None) as bar:
        targets = write_scene(out_tif, size=size, seed=seed,
                              gsd=CHIP_GSD if gsd is None else gsd,
                              nodata_margin=not no_margin, epsg=epsg, n_targets=n_targets,
                              n_absent=n_absent, progress=bar.update, objects=with_objects,
                              realism=realism, bands=bands)
    present = sum(not t["absent"] for t in targets)
    extra = f" and {objects_path(out_tif)}" if with_objects else ""
    click.echo(f"wrote {out_tif} and its targets layer ({present} present, "
               f"{len(targets) - present} absent expressions){extra}", err=True)


@synth.command("mosaic")
@click.argument("out_tif", type=str)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chip-size", type=int, default=192, show_default=True,
              help="Side of each of the 3 x 3 chips in pixels.")
@click.option("--epsg", type=int, default=32633, show_default=True, help="Projected CRS (UTM).")
@handle_errors
def mosaic(out_tif: str, seed: int, chip_size: int, epsg: int) -> None:
    """Write a 3 x 3 chip mosaic whose referent sits in one tile (+ OUT_TIF.targets.gpkg)."""
    from rrsis_geo.data.synth import write_mosaic_3x3
    from rrsis_geo.safety import check_outputs

    check_outputs([], [("OUT_TIF", out_tif), ("targets layer", f"{out_tif}.targets.gpkg")])
    rows = write_mosaic_3x3(out_tif, seed, chip_size, epsg=epsg)
    click.echo(f"wrote {out_tif}: {rows[0]['expression']!r} (+ {len(rows) - 1} absent)", err=True)


command = synth
