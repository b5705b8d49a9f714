"""Write the result layer atomically, in any vector format pyogrio's GDAL writes.

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
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rrsis_geo.errors import UsageError
from rrsis_geo.safety import atomic_write

__all__ = ["DEFAULT_LAYER", "DEFAULT_SCHEMA", "EXTENSION_DRIVERS", "check_vector_output",
           "driver_for", "write_layer", "write_text_atomic"]

DEFAULT_LAYER = "referred_objects"

#: Fields every result layer carries, also when it is empty (contract: docs/architecture.md
#: §Output layer).
DEFAULT_SCHEMA: dict[str, type] = {"expression": str, "score": float, "area_m2": float, "rank": int}

_PANDAS_DTYPES = {str: "object", float: "float64", int: "int64", bool: "bool"}
_SIDE_SUFFIXES = ("-journal", "-wal", "-shm")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically: a temporary file beside it, then ``os.replace``; on any
    error the temporary file is removed and an existing file is left untouched."""
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write(text)


#: file extension → OGR driver (the formats GIS users exchange; any other OGR driver that
#: pyogrio's GDAL can write is available with ``driver=``, e.g. ``--driver GML``)
EXTENSION_DRIVERS: dict[str, str] = {
    ".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".geojsonl": "GeoJSONSeq",
    ".geojsons": "GeoJSONSeq", ".shp": "ESRI Shapefile", ".fgb": "FlatGeobuf", ".kml": "KML",
    ".gml": "GML", ".csv": "CSV", ".sqlite": "SQLite", ".tab": "MapInfo File",
    ".parquet": "Parquet", ".gpx": "GPX",
}
#: drivers whose files hold several layers: ``overwrite`` replaces our layer only
MULTI_LAYER_DRIVERS = ("GPKG", "SQLite")
#: drivers that write several files (a temporary folder, then each file is renamed)
_SIDECARS = {"ESRI Shapefile": (".shp", ".shx", ".dbf", ".prj", ".cpg"),
             "MapInfo File": (".tab", ".dat", ".map", ".id"),
             "GML": (".gml", ".xsd", ".gfs")}
#: GeoPackage version written: 1.2 is read without warnings by every GDAL since 2.2 (QGIS LTR
#: releases included); GDAL 3.12's default 1.4 makes GDAL < 3.7 warn on each open
GPKG_VERSION = "1.2"
MODES = ("create", "overwrite", "append")


def writable_drivers() -> list[str]:
    import pyogrio

    return sorted(pyogrio.list_drivers(write=True))


def driver_for(path: str | os.PathLike[str], driver: str | None = None) -> str:
    """OGR driver of an output: ``driver`` when given (checked), else from the extension.

    Raises:
        UsageError: an unknown extension, or a driver this installation cannot write.
    """
    if driver:
        names = writable_drivers()
        match = next((d for d in names if d.lower() == driver.lower()), None)
        if match is None:
            raise UsageError(f"--driver {driver}: not a vector format this installation writes "
                             f"(choose one of: {', '.join(names)})")
        return match
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSION_DRIVERS:
        known = ", ".join(sorted(EXTENSION_DRIVERS))
        raise UsageError(f"cannot tell the output format of {Path(path).name!r} from its "
                         f"extension (known: {known}); name the format with --driver")
    name = EXTENSION_DRIVERS[suffix]
    if name not in writable_drivers():
        hint = (" (GeoParquet needs a GDAL built with Arrow/Parquet; pyogrio's bundled GDAL "
                "has none: write .gpkg or .fgb)" if name == "Parquet" else "")
        raise UsageError(f"the installed GDAL cannot write {name} ({suffix}){hint}")
    return name


def _layer_name(path: Path, driver: str, layer: str) -> str:
    """Our layer's name: ``layer`` in multi-layer files, the file's stem elsewhere (GeoJSON's
    ``"name"``, which QGIS shows)."""
    return layer if driver in MULTI_LAYER_DRIVERS else (path.stem or layer)


def _existing_layers(path: Path) -> list[str]:
    import pyogrio

    try:
        return [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception:  # noqa: BLE001 - unreadable: treated as not ours to edit
        return []


def check_vector_output(path: str | os.PathLike[str], *, driver: str | None = None,
                        layer: str = DEFAULT_LAYER, mode: str = "create",
                        schema: Mapping[str, type] | None = None) -> str:
    """Before any work: the format is known and the overwrite rules allow writing ``path``.

    ``create`` refuses an existing output; ``overwrite`` replaces our layer (other layers of a
    GeoPackage are kept) or the file; ``append`` needs the existing layer (when there is one)
    to hold the fields of ``schema`` with the same types. Returns the driver name.

    Raises:
        OutputError (exit 2): the output exists in ``create`` mode, or cannot take an append.
        UsageError (exit 2): unknown format or mode.
    """
    from rrsis_geo.errors import OutputError

    if mode not in MODES:
        raise UsageError(f"write mode must be one of {', '.join(MODES)}")
    path = Path(path)
    name = driver_for(path, driver)
    if not os.path.lexists(path):
        return name
    lname = _layer_name(path, name, layer)
    if mode == "create":
        what = (f"it holds layer(s) {', '.join(_existing_layers(path)) or '?'}; "
                "--overwrite replaces the layer "
                f"{lname!r} only, keeping the others" if name in MULTI_LAYER_DRIVERS
                else "--overwrite replaces it")
        raise OutputError(f"output {path} exists; {what}, --append adds features to it")
    if mode == "append":
        import pyogrio

        layers = _existing_layers(path)
        if not layers:
            raise OutputError(f"--append: {path} exists but is not a vector file GDAL reads")
        target = lname if name in MULTI_LAYER_DRIVERS else layers[0]
        if target not in layers:
            return name  # a new layer in an existing GeoPackage
        info = pyogrio.read_info(path, layer=target)
        have = {str(f).lower(): str(t) for f, t in zip(info["fields"], info["dtypes"])}
        want = dict(DEFAULT_SCHEMA if schema is None else schema)
        missing = [f for f in want if f.lower() not in have]
        if missing:
            raise OutputError(f"--append: layer {target!r} of {path} has another schema "
                              f"(no field {', '.join(missing)}); write a new layer or file")
        kinds = {str: ("object",), float: ("float64", "float32"),
                 int: ("int64", "int32", "int16"), bool: ("bool",)}
        for f, t in want.items():
            if name in ("CSV",):
                break  # CSV fields are text unless declared; values are converted on append
            if have[f.lower()] not in kinds.get(t, (have[f.lower()],)):
                raise OutputError(f"--append: field {f!r} of layer {target!r} in {path} is "
                                  f"{have[f.lower()]}, not {t.__name__}; write a new layer")
    return name


def write_layer(
    path: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    geometries: Sequence[Any],
    crs: Any,
    layer: str = DEFAULT_LAYER,
    *,
    schema: Mapping[str, type] | None = None,
    rfc7946: bool = False,
    driver: str | None = None,
    mode: str = "overwrite",
    dst_crs: Any = None,
) -> Path:
    """Write polygons and their attributes as one layer, atomically.

    Args:
        path: output file; the format comes from ``driver`` or the extension (see
            :data:`EXTENSION_DRIVERS`).
        records: one dict of attributes per feature (at least ``expression``, ``score``,
            ``area_m2``, ``rank``; extra keys become extra fields).
        geometries: shapely geometries in ``crs``, same length as ``records``.
        crs: CRS of the geometries (rasterio/pyproj CRS, EPSG string, WKT); ``None`` writes none.
        layer: layer name in a GeoPackage / SQLite file; single-layer formats name their layer
            after the file's stem (GeoJSON's ``"name"``).
        schema: field name → Python type (str, float, int, bool) for fields that must exist even
            when ``records`` is empty; defaults to :data:`DEFAULT_SCHEMA`.
        rfc7946: GeoJSON only: reproject to WGS 84 and follow RFC 7946 strictly.
        driver: OGR driver name instead of the extension's.
        mode: ``create`` (refuse an existing file), ``overwrite`` (replace our layer; other
            layers of a GeoPackage are kept; a single-layer file is replaced) or ``append``
            (add the features to the existing layer, reprojected to its CRS; same schema).
        dst_crs: reproject the geometries to this CRS (attributes, ``area_m2`` included, are
            unchanged).

    Returns:
        The written path.

    Raises:
        UsageError: the destination folder is missing or not writable, the format is unknown,
            the overwrite rules refuse (see :func:`check_vector_output`), or GDAL fails.
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
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output folder is not writable: {parent}")
    driver = check_vector_output(path, driver=driver, layer=layer, mode=mode, schema=schema)
    lname = _layer_name(path, driver, layer)

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
    if dst_crs is not None and crs is not None:
        try:
            frame = frame.to_crs(dst_crs)
        except Exception as exc:  # noqa: BLE001 - pyproj raises several types
            raise UsageError(f"--dst-crs {dst_crs}: {exc}") from None

    exists = os.path.lexists(path)
    if mode == "append" and exists:
        layers = _existing_layers(path)
        target = lname if driver in MULTI_LAYER_DRIVERS else layers[0]
        if target in layers:
            old = pyogrio.read_dataframe(path, layer=target)
            if old.crs is not None and frame.crs is not None and old.crs != frame.crs:
                frame = frame.to_crs(old.crs)
            for col in frame.columns:
                if col in old.columns and col != old.geometry.name and col in schema:
                    with contextlib.suppress(ValueError, TypeError):
                        old[col] = old[col].astype(frame[col].dtype)
            frame = gpd.GeoDataFrame(pd.concat([old.rename_geometry("geometry")
                                                if old.geometry.name != "geometry" else old,
                                                frame], ignore_index=True),
                                     geometry="geometry", crs=old.crs or frame.crs)
            lname = target

    kwargs: dict[str, Any] = {"driver": driver, "layer": lname}
    if polygonal:
        # One declared type for the layer; QGIS dislikes Polygon/MultiPolygon mixtures.
        kwargs.update(geometry_type="MultiPolygon", promote_to_multi=True)
    if driver == "GeoJSON":
        kwargs["layer_options"] = {"RFC7946": "YES" if rfc7946 else "NO"}
    elif driver == "CSV":
        kwargs["layer_options"] = {"GEOMETRY": "AS_WKT"}

    keep_others = exists and driver in MULTI_LAYER_DRIVERS and mode in ("overwrite", "append")
    if driver == "GPKG" and not keep_others:
        kwargs["dataset_options"] = {"VERSION": GPKG_VERSION}
    if driver in _SIDECARS:
        _write_multi_file(frame, path, kwargs, driver)
        return path

    try:
        with atomic_write(path, f".tmp{path.suffix}", _SIDE_SUFFIXES) as tmp:
            if keep_others:
                shutil.copy2(path, tmp)  # the other layers come along; ours is replaced in the copy
            pyogrio.write_dataframe(frame, tmp, **kwargs)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError,
            pyogrio.errors.FieldError, pyogrio.errors.GeometryError) as exc:
        raise UsageError(f"cannot write output {path}: {exc}") from exc
    return path


def _write_multi_file(frame: Any, path: Path, kwargs: dict[str, Any], driver: str) -> None:
    """Formats of several files (Shapefile: .shp .shx .dbf .prj .cpg): written into a hidden
    temporary folder beside the output, then each file is renamed over its final name (the
    set is complete or absent, though not one atomic step)."""
    import pyogrio

    parent = path.parent if str(path.parent) else Path(".")
    tmpdir = parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmpdir"
    tmpdir.mkdir()
    try:
        pyogrio.write_dataframe(frame, tmpdir / path.name, **kwargs)
        for suffix in _SIDECARS[driver]:  # stale sidecars of an earlier file must not stay
            target = path.with_suffix(suffix)
            if not (tmpdir / target.name).exists():
                with contextlib.suppress(OSError):
                    target.unlink()
        for f in sorted(tmpdir.iterdir(), key=lambda f: f.suffix.lower() in (".shp", ".tab", ".gml")):
            os.replace(f, parent / f.name)  # the main file last
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError,
            pyogrio.errors.FieldError, pyogrio.errors.GeometryError) as exc:
        raise UsageError(f"cannot write output {path}: {exc}") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
