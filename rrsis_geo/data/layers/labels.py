"""Label layers for ``dataset build``: read, classify, reproject, repair, buffer.

Two kinds of input:

* any vector file pyogrio reads (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, ...), in any CRS;
* a CSV of pixel boxes in deepforest's layout (``image_path,xmin,ymin,xmax,ymax,label``), pixel
  coordinates with the origin at the top-left corner of the raster's native grid. Rows whose
  ``image_path`` names another image than the raster are skipped; a CSV naming one image only is
  taken as it is.

Every label becomes a :class:`Label` with a polygonal geometry in the raster's CRS: geometries
are made valid (``shapely.make_valid``, polygonal parts kept), lines and points are buffered by
``--buffer`` metres (in a local UTM zone, so the distance is metric for any CRS), boxes become the
inscribed ellipse (``--box-mask ellipse``) or stay boxes.

Class names are lower-cased and trimmed (the decoupler matches class phrases case-sensitively and
the model's lists are lower case); ``--class-map user=model`` renames them after that.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.errors import BadInputError, UsageError

BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
BOX_MASKS = ("ellipse", "box")
#: vertices of a box's inscribed ellipse
ELLIPSE_VERTICES = 48


@dataclass
class Label:
    """One labelled object.

    Attributes:
        fid: stable id ``"<layer stem>:<feature index>"``.
        category: class name (after lower-casing and ``--class-map``).
        geometry: shapely (Multi)Polygon in the raster's CRS.
        source: the file it came from.
        kind: "polygon", "line", "point" or "box" (the original geometry type).
    """

    fid: str
    category: str
    geometry: Any
    source: str
    kind: str = "polygon"


def parse_class_map(spec: str | None) -> dict[str, str]:
    """``"user=model,Tree=tree"`` -> ``{"user": "model", "tree": "tree"}`` (keys lower-cased)."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"--class-map entries must be user=model, got {part.strip()!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if not k or not v:
            raise UsageError(f"--class-map entries must be user=model, got {part.strip()!r}")
        out[k.lower()] = v.lower()
    return out


def parse_buffers(spec: str | None) -> tuple[float | None, dict[str, float]]:
    """``--buffer``: ``"3"`` (all lines/points) or ``"road=4,well=2"`` (per class), or both
    (``"2,road=4"``). Returns (default metres or None, per-class metres)."""
    if spec is None or not str(spec).strip():
        return None, {}
    default: float | None = None
    per: dict[str, float] = {}
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        key, _, val = part.rpartition("=")
        try:
            metres = float(val)
        except ValueError:
            raise UsageError(f"--buffer takes metres or class=metres, got {part!r}") from None
        if not (math.isfinite(metres) and metres > 0):
            raise UsageError(f"--buffer must be a positive number of metres, got {part!r}")
        if key:
            per[key.strip().lower()] = metres
        else:
            default = metres
    return default, per


def _norm_class(value: Any) -> str:
    from rrsis_geo.text.classes import normalize_phrase  # lazy: the text package loads NLTK

    return normalize_phrase(value)


def _is_box_csv(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    cols = {c.strip().lower() for c in header}
    return all(c in cols for c in BOX_COLUMNS)


def ellipse_ring(x0: float, y0: float, x1: float, y1: float,
                 n: int = ELLIPSE_VERTICES) -> list[tuple[float, float]]:
    """Vertices of the ellipse inscribed in the box (pixel or map coordinates)."""
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    rx, ry = abs(x1 - x0) / 2.0, abs(y1 - y0) / 2.0
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist()))


def _read_box_csv(path: Path, raster_path: str, transform, class_name: str | None,
                  class_field: str | None, box_mask: str) -> list[tuple[str, Any, str, str]]:
    """Rows of a deepforest CSV -> (fid, geometry in the raster CRS, raw class, kind)."""
    from shapely.affinity import affine_transform
    from shapely.geometry import Polygon, box

    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()}
                for r in csv.DictReader(fh)]
    if not rows:
        raise BadInputError(f"{path}: the CSV has no rows")
    field = (class_field or "label").lower()
    if class_name is None and field not in rows[0]:
        raise BadInputError(f"{path}: no column {field!r} (columns: {', '.join(rows[0])}); "
                            "use --class NAME or --class-field FIELD")
    if "image_path" in rows[0]:
        stem = Path(raster_path).stem
        names = {Path(r["image_path"]).stem for r in rows}
        mine = [r for r in rows if Path(r["image_path"]).stem == stem]
        if mine:
            rows = mine
        elif len(names) > 1:
            raise BadInputError(f"{path}: no row has image_path {stem}.* (the CSV names "
                                f"{len(names)} other images)")
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    out = []
    for i, r in enumerate(rows):
        try:
            x0, y0, x1, y1 = (float(r[k]) for k in BOX_COLUMNS)
        except ValueError:
            raise BadInputError(f"{path}: row {i + 2}: box coordinates are not numbers") from None
        if not (x1 > x0 and y1 > y0):
            continue  # degenerate box
        geom = (Polygon(ellipse_ring(x0, y0, x1, y1)) if box_mask == "ellipse"
                else box(x0, y0, x1, y1))
        geom = affine_transform(geom, [a, b, d, e, c, f])
        raw = class_name if class_name is not None else r[field]
        out.append((f"{path.stem}:{i}", geom, raw, "box"))
    return out


def _read_vector(path: Path, layer: str | None, raster_crs, class_name: str | None,
                 class_field: str | None, buffers: tuple[float | None, dict[str, float]],
                 class_map: dict[str, str]) -> list[tuple[str, Any, str, str]]:
    import geopandas as gpd

    from rrsis_geo.geo.vectors import read_vector_layer

    gdf, layer_name = read_vector_layer(path, layer)
    if gdf.empty:
        raise BadInputError(f"{path}: the layer {layer_name!r} is empty")
    if class_name is None:
        if class_field is None:
            raise UsageError(f"{path}: give --class NAME (one class for the layer) or "
                             "--class-field FIELD")
        if class_field not in gdf.columns:
            cols = [c for c in gdf.columns if c != "geometry"]
            raise BadInputError(f"{path}: no field {class_field!r} (fields: "
                                f"{', '.join(cols) or 'none'})")
    if gdf.crs is None:
        raise BadInputError(f"{path}: the layer has no CRS; assign one first "
                            "(e.g. ogr2ogr -a_srs EPSG:XXXX)")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise BadInputError(f"{path}: the layer has no geometry")
    raw_classes = ([class_name] * len(gdf) if class_name is not None
                   else [None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                         for v in gdf[class_field].tolist()])
    kinds = [_kind(g) for g in gdf.geometry]
    default_buf, per_buf = buffers
    if any(k != "polygon" for k in kinds):
        # lines and points get their buffer in metres, in a local UTM zone
        utm = gdf.estimate_utm_crs()
        local = gdf.to_crs(utm)
        geoms = list(local.geometry)
        for i, (g, k, raw) in enumerate(zip(geoms, kinds, raw_classes)):
            if k == "polygon" or raw is None:
                continue
            name = _norm_class(raw)
            metres = per_buf.get(class_map.get(name, name), per_buf.get(name, default_buf))
            if metres is None:
                raise UsageError(f"{path}: the layer holds {k}s; give --buffer METRES (or "
                                 f"class=METRES) to turn them into areas")
            geoms[i] = g.buffer(metres)
        gdf = gpd.GeoDataFrame(gdf.drop(columns="geometry"), geometry=geoms, crs=utm)
    gdf = gdf.to_crs(raster_crs)
    out = []
    for idx, g, raw, k in zip(gdf.index, gdf.geometry, raw_classes, kinds):
        if raw is None:
            continue
        out.append((f"{path.stem}:{idx}", g, raw, k))
    return out


def _kind(g) -> str:
    t = g.geom_type
    if "Polygon" in t:
        return "polygon"
    if "Line" in t:
        return "line"
    if "Point" in t:
        return "point"
    return "polygon"  # collections: their polygonal parts are kept by _polygonal


def _polygonal(g):
    """Valid polygonal part of a geometry (None when nothing polygonal is left)."""
    import shapely
    from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

    if g is None or g.is_empty:
        return None
    if not g.is_valid:
        g = shapely.make_valid(g)
    if isinstance(g, (Polygon, MultiPolygon)):
        return g if g.area > 0 else None
    if isinstance(g, GeometryCollection):
        parts = [p for p in getattr(g, "geoms", []) if isinstance(p, (Polygon, MultiPolygon))]
        if not parts:
            return None
        u = shapely.union_all(parts)
        return u if u.area > 0 else None
    return None


def read_labels(paths: list[str | os.PathLike[str]], raster_path: str, raster_crs, transform,
                *, class_name: str | None = None, class_field: str | None = None,
                class_map: dict[str, str] | None = None, layer: str | None = None,
                box_mask: str = "ellipse", buffer: str | None = None) -> list[Label]:
    """Read every label file into :class:`Label` objects in the raster's CRS.

    Args:
        paths: vector files or deepforest box CSVs.
        raster_path, raster_crs, transform: the raster (box CSVs are in its native pixels).
        class_name: one class for every feature; else ``class_field`` names the field (CSV
            default: ``label``).
        class_map: lower-case user class -> model class.
        layer: layer name in multi-layer files (default: the first layer).
        box_mask: "ellipse" (inscribed ellipse, e.g. tree crowns) or "box".
        buffer: ``--buffer`` spec for lines and points (see :func:`parse_buffers`).

    Raises:
        BadInputError: missing/unreadable file, empty layer, unknown field, no CRS.
        UsageError: neither class option, bad --class-map/--buffer/--box-mask.
    """
    if class_name is not None and class_field is not None:
        raise UsageError("give either --class or --class-field, not both")
    if box_mask not in BOX_MASKS:
        raise UsageError(f"--box-mask must be one of {', '.join(BOX_MASKS)}, got {box_mask!r}")
    cmap = class_map or {}
    buffers = parse_buffers(buffer)
    labels: list[Label] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise BadInputError(f"{path}: no such file")
        if path.is_file() and path.stat().st_size == 0:
            raise BadInputError(f"{path}: empty file (0 bytes)")
        if _is_box_csv(path):
            rows = _read_box_csv(path, raster_path, transform, class_name, class_field, box_mask)
        else:
            rows = _read_vector(path, layer, raster_crs, class_name, class_field, buffers, cmap)
        if not rows:
            raise BadInputError(f"{path}: no usable feature (empty layer or degenerate boxes)")
        for fid, geom, raw, kind in rows:
            g = _polygonal(geom)
            if g is None:
                continue
            name = _norm_class(raw)
            name = cmap.get(name, name)
            if not name:
                continue
            labels.append(Label(fid, name, g, str(path), kind))
    if not labels:
        raise BadInputError("the label layers hold no usable polygon after repair")
    return labels
