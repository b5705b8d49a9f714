"""Region of interest: run on a window of the raster as if it were the whole scene.

``--roi`` restricts a run to part of a raster: the tiles, the global (overview) pass and the
scene-frame words ("in the north-east", "the largest") all refer to the region, not the whole
raster. The region is given as ``XMIN,YMIN,XMAX,YMAX`` in the raster's CRS (a rectangle), as a
polygon in WKT (``POLYGON ((…))``, ``MULTIPOLYGON …``, in the raster's CRS), or as a vector file
(GeoPackage, GeoJSON, shapefile..., or GeoJSON text) reprojected to the raster's CRS. Its
extent, rounded outwards to whole pixels and clipped to the raster, is the window the run reads.

Polygons are a true mask (:class:`RegionMask`): pixels outside them are treated like nodata
(tiles wholly outside are not read, the model's probabilities there count for nothing) and the
output polygons are clipped to them. A file with points or lines only gives its extent. The mask
is rasterised per tile on the tile's own transform, never for the whole scene.

The window is exposed to the rest of the pipeline as a GDAL VRT that references the source file
(no pixel is copied): same CRS, a pixel grid aligned with the source, the same bands, nodata,
colour interpretation and internal mask. Polygons therefore come out in the source CRS at the
right place without any coordinate shifting downstream.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from rasterio.windows import Window

from rrsis_geo.errors import BadInputError, OptionError, UsageError
from rrsis_geo.geo.output import write_text_atomic
from rrsis_geo.geo.raster import RasterInfo
from rrsis_geo.option_text import check_bounds, parse_bounds_text

__all__ = ["Region", "RegionMask", "parse_region", "parse_roi", "roi_window", "write_window_vrt"]

_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32",
    "float64": "Float64",
}


@dataclass
class Region:
    """A parsed ``--roi``: its bounds in the raster's CRS and, for polygons, the polygon(s).

    Attributes:
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS.
        polygon: shapely (Multi)Polygon in the raster's CRS, or None for a rectangle (bounds).
    """

    bounds: tuple[float, float, float, float]
    polygon: Any = None


_WKT = re.compile(r"^\s*(MULTI)?POLYGON\b", re.IGNORECASE)


def parse_roi(spec: str | Sequence[float], info: RasterInfo) -> tuple[float, float, float, float]:
    """``--roi`` → bounds ``(xmin, ymin, xmax, ymax)`` in the raster's CRS (see
    :func:`parse_region`)."""
    return parse_region(spec, info).bounds


def parse_region(spec: str | Sequence[float], info: RasterInfo) -> Region:
    """``--roi`` → :class:`Region` in the raster's CRS.

    Args:
        spec: ``"XMIN,YMIN,XMAX,YMAX"`` (or those four numbers) in the raster's CRS; a WKT
            polygon in the raster's CRS; GeoJSON text (longitude/latitude unless it names a CRS); or a vector file (any
            GDAL path).
        info: the raster.

    Raises:
        OptionError (a UsageError; field ``roi``): malformed bounds or WKT, an unreadable or
            empty vector file, or a vector file without CRS.
    """
    if not isinstance(spec, str):  # bounds as numbers
        return Region(check_bounds(spec))
    spec = (spec or "").strip()
    bounds = parse_bounds_text(spec)
    if bounds is not None:
        return Region(bounds)
    if _WKT.match(spec):
        import shapely

        try:
            geom = shapely.from_wkt(spec)
        except Exception as exc:  # noqa: BLE001 - shapely's GEOSException
            raise OptionError("roi", "--roi: not a valid WKT polygon "
                              f"({' '.join(str(exc).split())})") from None
        return _region_of([geom], "the WKT polygon")
    from rrsis_geo.geo.sources import gdal_path, is_local

    if spec.startswith("{"):  # GeoJSON text: GDAL's GeoJSON driver reads it as it is
        return _vector_region(spec, info, "the GeoJSON text")
    if not is_local(spec):  # /vsizip/…, a URL: GDAL reads it (or says why not)
        return _vector_region(gdal_path(spec), info)
    if not Path(spec).is_file():
        raise OptionError("roi", f"--roi {spec!r}: neither XMIN,YMIN,XMAX,YMAX, a WKT polygon "
                          "nor an existing vector file")
    return _vector_region(spec, info)


def _vector_region(path: str, info: RasterInfo, name: str | None = None) -> Region:
    import pyogrio
    import shapely

    name = name or path
    try:
        meta = pyogrio.read_info(path)
        table = pyogrio.read_dataframe(path, columns=[])
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types for unreadable files
        raise OptionError("roi", f"--roi {name}: cannot read it as a vector file "
                          f"({' '.join(str(exc).split())})") from None
    geoms = [g for g in table.geometry if g is not None and not g.is_empty]
    if not geoms:
        raise OptionError("roi", f"--roi {name}: the file has no geometries")
    crs = meta.get("crs")
    if crs is None:
        raise OptionError("roi", f"--roi {name}: the file has no CRS")
    from pyproj import CRS, Transformer

    src, dst = CRS.from_user_input(crs), CRS.from_user_input(info.crs.to_wkt())
    if not src.equals(dst):
        tr = Transformer.from_crs(src, dst, always_xy=True)
        # densify so that curved edges after reprojection stay in place
        geoms = [shapely.transform(shapely.segmentize(g, _densify_step(g)),
                                   lambda xy: _stack(tr.transform(xy[:, 0], xy[:, 1])))
                 for g in geoms]
    return _region_of(geoms, name)


def _region_of(geoms: list, name: str) -> Region:
    """Polygonal parts → a mask region; points or lines only → their extent (a rectangle)."""
    import shapely

    polys = [shapely.make_valid(g) for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    polygon = None
    if polys:
        polygon = shapely.union_all(polys)
        # make_valid may add lines (collapsed rings): the mask is the polygonal part
        if polygon.geom_type == "GeometryCollection":
            polygon = shapely.union_all([g for g in polygon.geoms
                                         if g.geom_type in ("Polygon", "MultiPolygon")])
        if polygon.is_empty or not polygon.area > 0:
            raise OptionError("roi", f"--roi {name}: the polygons have no area")
        xmin, ymin, xmax, ymax = polygon.bounds
    else:
        xmin, ymin, xmax, ymax = shapely.union_all(geoms).bounds
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        raise OptionError("roi", f"--roi {name}: its extent cannot be expressed in the "
                          "raster's CRS")
    if xmin == xmax or ymin == ymax:  # a point or a straight line: no area
        raise OptionError("roi", f"--roi {name}: the features' extent has no area")
    return Region((xmin, ymin, xmax, ymax), polygon)


class RegionMask:
    """A polygon region seen through a pixel grid: which tiles it touches, and per-tile masks.

    A pixel is inside when its centre is (``rasterio.features.geometry_mask``); a tile whose
    square misses the polygon is outside without rasterising anything. Memory is one tile.

    Args:
        polygon: shapely (Multi)Polygon in the grid's CRS.
        transform: the grid's affine transform (pixel → CRS).
    """

    def __init__(self, polygon: Any, transform: Any) -> None:
        import shapely

        self.polygon = polygon
        self.transform = transform
        shapely.prepare(polygon)

    def _box(self, row_off: int, col_off: int, height: int, width: int):
        from shapely.geometry import Polygon

        t = self.transform
        corners = [t @ (col_off + dc, row_off + dr)
                   for dr, dc in ((0, 0), (0, width), (height, width), (height, 0))]
        return Polygon(corners)

    def touches(self, row_off: int, col_off: int, height: int, width: int) -> bool:
        """Whether the window's pixels may hold inside pixels (its square meets the polygon)."""
        return bool(self.polygon.intersects(self._box(row_off, col_off, height, width)))

    def mask(self, row_off: int, col_off: int, height: int, width: int):
        """bool ``[height, width]``: True where the pixel centre is inside the polygon."""
        import numpy as np
        from affine import Affine
        from rasterio.features import geometry_mask

        if not self.touches(row_off, col_off, height, width):
            return np.zeros((height, width), bool)
        t = self.transform @ Affine.translation(col_off, row_off)
        return geometry_mask([self.polygon], out_shape=(height, width), transform=t,
                             invert=True)

    def apply(self, image, valid, row_off: int, col_off: int):
        """Treat a tile's outside pixels as nodata: ``valid`` loses them and, in ``image``
        ``[C, h, w]``, they take the mean of the inside valid pixels (as ``read_tile`` fills
        nodata). Returns ``(image, valid)``."""
        h, w = valid.shape
        inside = self.mask(row_off, col_off, h, w)
        outside = valid & ~inside
        if not outside.any():
            return image, valid
        import numpy as np

        valid = valid & inside
        fill = image[:, valid].mean(axis=1) if valid.any() else np.full(image.shape[0], 0.5)
        image = image.copy()
        image[:, outside] = fill.astype(image.dtype)[:, None]
        return image, valid

    def clip(self, geometry: Any) -> Any:
        """``geometry`` ∩ the polygon (polygonal part only; may be empty)."""
        import shapely

        out = shapely.intersection(geometry, self.polygon)
        if out.geom_type == "GeometryCollection":
            out = shapely.union_all([g for g in out.geoms
                                     if g.geom_type in ("Polygon", "MultiPolygon")])
        return out


def _densify_step(geom) -> float:
    xmin, ymin, xmax, ymax = geom.bounds
    return max(xmax - xmin, ymax - ymin, 1e-9) / 64


def _stack(xy):
    import numpy as np

    return np.column_stack(xy)


def roi_window(bounds: tuple[float, float, float, float], info: RasterInfo) -> Window:
    """Native pixel window of ``bounds`` (rounded outwards, clipped to the raster).

    Raises:
        UsageError: the region does not overlap the raster.
    """
    inv = ~info.transform
    xs = (bounds[0], bounds[2])
    ys = (bounds[1], bounds[3])
    cols, rows = zip(*(inv @ (x, y) for x in xs for y in ys))
    c0 = max(0, math.floor(min(cols) + 1e-9))
    r0 = max(0, math.floor(min(rows) + 1e-9))
    c1 = min(info.width, math.ceil(max(cols) - 1e-9))
    r1 = min(info.height, math.ceil(max(rows) - 1e-9))
    if c1 <= c0 or r1 <= r0:
        b = info.bounds
        raise UsageError(
            f"--roi does not overlap the raster (raster bounds {b[0]:.6g},{b[1]:.6g},"
            f"{b[2]:.6g},{b[3]:.6g} in its CRS)")
    return Window(c0, r0, c1 - c0, r1 - r0)


def write_window_vrt(info: RasterInfo, window: Window, out_path: str | os.PathLike,
                     frame: tuple[Any, Any] | None = None) -> str:
    """Write a VRT exposing ``window`` of ``info.path`` (all bands, nodata, mask); returns its path.

    ``frame``: ``(crs, transform)`` to give the VRT instead of the source's (a raster without a
    CRS read in a stand-in frame, :mod:`rrsis_geo.geo.localframe`).

    Raises:
        BadInputError: the source cannot be opened.
    """
    import rasterio

    src_path = os.path.abspath(info.path)
    c0, r0, w, h = int(window.col_off), int(window.row_off), int(window.width), \
        int(window.height)
    try:
        src = rasterio.open(src_path)
    except rasterio.errors.RasterioIOError as exc:
        raise BadInputError(f"{info.path}: cannot open raster ({exc})") from None
    with src:
        t = src.window_transform(window)
        crs = src.crs
        if frame is not None:
            crs, t = frame
        masks = src.mask_flag_enums
        per_dataset = all(any(f.name == "per_dataset" for f in m) for m in masks) and \
            not any(any(f.name == "alpha" for f in m) for m in masks)
        lines = [f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">']
        if crs is not None:
            lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>')
        lines.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}"
                     "</GeoTransform>")
        source = (f"      <SourceFilename relativeToVRT=\"0\">{escape(src_path)}</SourceFilename>"
                  "\n      <SourceBand>{band}</SourceBand>\n"
                  f'      <SrcRect xOff="{c0}" yOff="{r0}" xSize="{w}" ySize="{h}"/>\n'
                  f'      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>')
        for b in range(1, src.count + 1):
            dtype = _GDAL_TYPES.get(src.dtypes[b - 1])
            if dtype is None:
                raise BadInputError(f"{info.path}: band {b} has an unsupported data type "
                                    f"{src.dtypes[b - 1]}")
            lines.append(f'  <VRTRasterBand dataType="{dtype}" band="{b}">')
            nodata = src.nodatavals[b - 1]
            if nodata is not None:
                lines.append(f"    <NoDataValue>{_num(nodata)}</NoDataValue>")
            ci = src.colorinterp[b - 1].name
            lines.append(f"    <ColorInterp>{ci.capitalize()}</ColorInterp>")
            lines.append("    <SimpleSource>\n" + source.format(band=b) + "\n    </SimpleSource>")
            lines.append("  </VRTRasterBand>")
        if per_dataset:  # an internal (or .msk) mask: keep it
            lines.append('  <MaskBand>\n    <VRTRasterBand dataType="Byte">\n'
                         "    <SimpleSource>\n" + source.format(band="mask,1")
                         + "\n    </SimpleSource>\n    </VRTRasterBand>\n  </MaskBand>")
        lines.append("</VRTDataset>")
    write_text_atomic(out_path, "\n".join(lines) + "\n")
    return str(out_path)


def _num(v: float) -> str:
    if math.isnan(v):
        return "nan"
    return repr(int(v)) if float(v).is_integer() else repr(float(v))
