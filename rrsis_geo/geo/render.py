"""Quick-look PNG: the raster (decimated), result polygons outlined, the sentence as a caption."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrsis_geo.errors import BadInputError
from rrsis_geo.safety import atomic_write


def render_png(raster: str | os.PathLike, out_png: str | os.PathLike, *,
               vector: str | os.PathLike | None = None, layer: str | None = None,
               expression: str | None = None, truth: str | os.PathLike | None = None,
               truth_filter: str | None = None, max_side: int = 1024,
               bands: str | Sequence[int] | None = None, crop_to: str = "scene") -> Path:
    """Write a PNG of ``raster`` with ``vector`` polygons (yellow) and optional truth (cyan).

    Args:
        crop_to: "scene" (whole raster) or "result" (zoom on the found objects, with margin).
    """
    import warnings

    import rasterio
    from PIL import Image, ImageDraw, ImageFont
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    from rrsis_geo.geo.radiometry import compute_normalizer
    from rrsis_geo.geo.raster import open_raster, parse_bands
    from rrsis_geo.geo.vectors import read_vector_layer

    info = open_raster(raster)
    b = parse_bands(bands, info)
    norm = compute_normalizer(str(raster), b, stretch="auto")
    gdfs = []
    if vector is not None:
        df, _ = read_vector_layer(vector, layer)
        if info.crs is not None and df.crs is not None and len(df):
            df = df.to_crs(info.crs)
        gdfs.append((df, (255, 230, 0)))
    if truth is not None:
        tdf, _ = read_vector_layer(truth)
        if truth_filter:
            tdf = tdf[tdf["expression"] == truth_filter]
        tdf = tdf[tdf.geometry.notna()]
        if info.crs is not None and tdf.crs is not None and len(tdf):
            tdf = tdf.to_crs(info.crs)
        gdfs.insert(0, (tdf, (0, 220, 255)))

    with warnings.catch_warnings():
        # an image without a CRS is drawn in its pixel frame, where segment writes its objects
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = rasterio.open(raster)
    with src:
        window = None
        if crop_to == "result" and gdfs and len(gdfs[-1][0]):
            x0, y0, x1, y1 = gdfs[-1][0].total_bounds
            pad = max(x1 - x0, y1 - y0) * 1.5 + 20 * abs(info.transform.a)
            window = from_bounds(x0 - pad, y0 - pad, x1 + pad, y1 + pad, src.transform)
            window = window.intersection(rasterio.windows.Window(0, 0, src.width, src.height))
        ww = window.width if window is not None else src.width
        wh = window.height if window is not None else src.height
        scale = min(1.0, max_side / max(ww, wh))
        ow, oh = max(1, int(round(ww * scale))), max(1, int(round(wh * scale)))
        data = src.read(list(b), window=window, out_shape=(3, oh, ow),
                        resampling=Resampling.average).astype(np.float32)
        valid = src.dataset_mask(window=window, out_shape=(oh, ow)) > 0
        wtrans = src.window_transform(window) if window is not None else src.transform
    rgb = (norm.apply(data) * 255).astype(np.uint8)
    rgb[:, ~valid] = 0
    img = Image.fromarray(np.moveaxis(rgb, 0, -1)).convert("RGB")
    draw = ImageDraw.Draw(img)
    inv = ~(wtrans * rasterio.Affine.scale(ww / ow, wh / oh))

    def rings(geom):
        polys = getattr(geom, "geoms", [geom])
        for p in polys:
            yield p.exterior
            yield from p.interiors

    for df, colour in gdfs:
        for geom in df.geometry:
            if geom is None or geom.is_empty:
                continue
            for ring in rings(geom):
                pts = [inv * (x, y) for x, y in ring.coords]
                draw.line(pts + [pts[0]], fill=colour, width=3)
    if expression:
        try:
            font = ImageFont.load_default(size=max(14, ow // 45))
        except TypeError:  # old Pillow
            font = ImageFont.load_default()
        found = len(gdfs[-1][0]) if vector is not None else None
        caption = f'"{expression}"' + (f"  -> {found} object(s)" if found is not None else "")
        bar_h = max(24, ow // 28)
        canvas = Image.new("RGB", (ow, oh + bar_h), (20, 20, 20))
        canvas.paste(img, (0, bar_h))
        ImageDraw.Draw(canvas).text((8, bar_h // 6), caption, fill=(255, 255, 255), font=font)
        img = canvas
    out_png = Path(out_png)
    try:
        with atomic_write(out_png, ".tmp.png") as tmp:
            img.save(tmp)
    except OSError as exc:
        raise BadInputError(f"cannot write {out_png}: {exc}") from exc
    return out_png
