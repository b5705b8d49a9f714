"""Write the result layer (GeoPackage or GeoJSON) atomically.

The file appears complete or not at all: it is written to a hidden temporary file in the destination
folder and moved over the final name with ``os.replace``; on any error the temporary file (and any
SQLite side file) is removed and an existing file of the same name is left untouched.

CRS choice: features are written in the source CRS (the issue asks for polygons in the source CRS).
For GeoJSON this uses GDAL's ``crs`` member (GeoJSON 2008 style), which GDAL/QGIS/pyogrio read
back; strict RFC 7946 (always WGS 84) is available with ``rfc7946=True``, which reprojects.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rrsis_geo.errors import UsageError

__all__ = ["DEFAULT_LAYER", "DEFAULT_SCHEMA", "driver_for", "write_layer", "write_text_atomic"]

DEFAULT_LAYER = "referred_objects"

#: Fields every result layer carries, also when it is empty (contract of ARCHITECTURE.md).
DEFAULT_SCHEMA: dict[str, type] = {"expression": str, "score": float, "area_m2": float, "rank": int}

_PANDAS_DTYPES = {str: "object", float: "float64", int: "int64", bool: "bool"}
_SIDE_SUFFIXES = ("-journal", "-wal", "-shm")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically: a temporary file beside it, then ``os.replace``; on any
    error the temporary file is removed and an existing file is left untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def driver_for(path: str | os.PathLike[str]) -> str:
    """OGR driver from the file name: GeoJSON for ``.geojson``/``.json``, else GeoPackage."""
    suffix = Path(path).suffix.lower()
    return "GeoJSON" if suffix in (".geojson", ".json") else "GPKG"


def write_layer(
    path: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    geometries: Sequence[Any],
    crs: Any,
    layer: str = DEFAULT_LAYER,
    *,
    schema: Mapping[str, type] | None = None,
    rfc7946: bool = False,
) -> Path:
    """Write polygons and their attributes as one layer, atomically.

    Args:
        path: output file; ``.geojson``/``.json`` → GeoJSON, anything else → GeoPackage.
        records: one dict of attributes per feature (at least ``expression``, ``score``,
            ``area_m2``, ``rank``; extra keys become extra fields).
        geometries: shapely geometries in ``crs``, same length as ``records``.
        crs: CRS of the geometries (rasterio/pyproj CRS, EPSG string, WKT); ``None`` writes none.
        layer: layer name (GeoPackage; GeoJSON files hold a single unnamed layer).
        schema: field name → Python type (str, float, int, bool) for fields that must exist even
            when ``records`` is empty; defaults to :data:`DEFAULT_SCHEMA`.
        rfc7946: GeoJSON only: reproject to WGS 84 and follow RFC 7946 strictly.

    Returns:
        The written path.

    Raises:
        UsageError: the destination folder is missing or not writable, or GDAL cannot write there.
        ValueError: ``records`` and ``geometries`` differ in length.

    Note:
        A zero-feature GeoPackage keeps the CRS and the full field schema. GeoJSON has no schema
        apart from its features, so an empty GeoJSON keeps the CRS but no field list.
    """
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely

    if len(records) != len(geometries):
        raise ValueError(f"{len(records)} records but {len(geometries)} geometries")
    path = Path(path)
    driver = driver_for(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output folder is not writable: {parent}")

    schema = dict(DEFAULT_SCHEMA if schema is None else schema)
    columns: dict[str, Any] = {}
    names = list(schema)
    for rec in records:
        names += [k for k in rec if k not in names and k != "geometry"]
    for name in names:
        values = [rec.get(name) for rec in records]
        if name in schema:
            columns[name] = pd.Series(values, dtype=_PANDAS_DTYPES.get(schema[name], "object"))
        else:
            columns[name] = pd.Series(values)
    geoms = list(geometries)
    polygonal = all(
        g is None or shapely.get_type_id(g) in (3, 6) for g in geoms  # Polygon, MultiPolygon
    )
    frame = gpd.GeoDataFrame(
        pd.DataFrame(columns), geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs
    )

    kwargs: dict[str, Any] = {}
    if polygonal:
        # One declared type for the layer; QGIS dislikes Polygon/MultiPolygon mixtures.
        kwargs.update(geometry_type="MultiPolygon", promote_to_multi=True)
    if driver == "GeoJSON":
        kwargs["layer_options"] = {"RFC7946": "YES" if rfc7946 else "NO"}
    else:
        kwargs["layer"] = layer

    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        pyogrio.write_dataframe(frame, tmp, driver=driver, **kwargs)
        os.replace(tmp, path)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise UsageError(f"cannot write output {path}: {exc}") from exc
    finally:
        for p in (tmp, *(Path(f"{tmp}{s}") for s in _SIDE_SUFFIXES)):
            with contextlib.suppress(OSError):
                p.unlink()
    return path
