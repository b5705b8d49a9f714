"""A raster without a CRS (a PNG or JPEG export, a photo) read in a stand-in metric frame.

Everything downstream of the raster reader (the work grid, resampling to the model's
resolution, areas in m², the class check's sizes) needs metres. For an image that has no CRS,
the pipeline gives it one for the run: pixel ``(column, row)`` sits at ``(column · s, −row · s)``
metres of a transverse Mercator with scale 1 on its central meridian (:data:`LOCAL_CRS`), ``s``
the ground size of a pixel (``--pixel-size``, else the model's resolution). Over the few
kilometres an image spans, a pixel's area there is ``s²`` to better than 1e-7. The objects found
are mapped back to the image's own frame and written without a CRS: pixel coordinates (x =
column, y = row, as GDAL and rasterio read an image without a geotransform), or the coordinates
of its geotransform when it has one but no CRS.
"""

from __future__ import annotations

import os
from typing import Any

from affine import Affine

from rrsis_geo.geo.raster import RasterInfo

#: the stand-in CRS: metres, scale exactly 1 along x = 0
LOCAL_CRS = "+proj=tmerc +lat_0=0 +lon_0=0 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def local_transform(pixel_size: float) -> Affine:
    """Pixel ``(column, row)`` -> stand-in metres ``(column · s, −row · s)``."""
    return Affine(pixel_size, 0.0, 0.0, 0.0, -pixel_size, 0.0)


def write_local_vrt(info: RasterInfo, pixel_size: float, out_path: str | os.PathLike) -> str:
    """A VRT of the whole raster in the stand-in frame; returns its path."""
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from rrsis_geo.geo.roi import write_window_vrt

    frame = (CRS.from_user_input(LOCAL_CRS), local_transform(pixel_size))
    return write_window_vrt(info, Window(0, 0, info.width, info.height), out_path, frame=frame)


def _to_image(pixel_size: float, image_transform: Affine) -> Affine:
    """Stand-in metres -> pixel ``(column, row)`` -> the image's own frame (its geotransform:
    the identity for an image without one, a frame of unknown units for a GeoTIFF that has a
    geotransform but lost its CRS)."""
    return image_transform @ ~local_transform(pixel_size)


def to_image_frame(geometry: Any, pixel_size: float, image_transform: Affine) -> Any:
    """A geometry in the stand-in frame -> the image's own frame."""
    from shapely import affinity

    m = _to_image(pixel_size, image_transform)
    return affinity.affine_transform(geometry, [m.a, m.b, m.d, m.e, m.c, m.f])


def image_frame_transform(transform: Affine, pixel_size: float,
                          image_transform: Affine) -> Affine:
    """A grid transform in the stand-in frame -> the same grid in the image's own frame."""
    return _to_image(pixel_size, image_transform) @ transform
