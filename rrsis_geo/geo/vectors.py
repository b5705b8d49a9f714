"""Reading one layer of a user's vector file, with one clear error line when it cannot be read.

Used by ``dataset build`` (label layers) and ``render`` (result and truth layers).
"""

from __future__ import annotations

import os
from typing import Any

from rrsis_geo.errors import BadInputError


def read_vector_layer(path: str | os.PathLike[str], layer: str | None = None) -> tuple[Any, str]:
    """One layer of a vector file GDAL reads, as a GeoDataFrame, and the layer's name.

    Args:
        path: the file (GeoPackage, Shapefile, GeoJSON...).
        layer: the layer to read; default: the first.

    Returns:
        ``(GeoDataFrame, layer name)``; the frame may be empty.

    Raises:
        BadInputError: not a vector file GDAL can read (a missing file included), no such layer,
            a layer that cannot be read or has no geometry.
    """
    import geopandas as gpd
    import pyogrio

    try:
        layers = pyogrio.list_layers(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises many types for unreadable files
        raise BadInputError(f"{path}: not a vector file GDAL can read ({_line(exc)})") from None
    names = [str(n) for n, _ in layers]
    if layer is not None and layer not in names:
        raise BadInputError(f"{path}: no layer {layer!r} (layers: {', '.join(names)})")
    if layer is None and len(names) > 1:
        layer = names[0]
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"{path}: cannot read the layer ({_line(exc)})") from None
    if not isinstance(gdf, gpd.GeoDataFrame):  # a table: a CSV of boxes, a lone .dbf
        raise BadInputError(f"{path}: the layer {layer or names[0]!r} has no geometry (a "
                            "table, not a vector layer)")
    return gdf, layer or names[0]


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
