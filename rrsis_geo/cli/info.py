"""``rrsis-geo info INPUT [--json]``: describe a raster the way ``segment`` will see it."""

from __future__ import annotations

import json
import warnings
from typing import Any

import click

from rrsis_geo.cli.options import handle_errors


def describe(path: str) -> dict[str, Any]:
    """Header facts plus per-band value ranges (2–98 percentiles) from a decimated read."""
    import numpy as np
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from rrsis_geo.geo.overview import overview_is_sampled, read_overview
    from rrsis_geo.geo.raster import open_raster

    info = open_raster(path)
    out = info.to_dict()
    # bound the overview read by bytes, not pixels: a 200-band raster gets a smaller overview
    max_pixels = max(10_000, 1_000_000 // max(1, min(info.count, 64)) * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(path)
    with src:
        data, valid = read_overview(src, range(1, info.count + 1), max_pixels=max_pixels)
        out["overview_sampled"] = overview_is_sampled(src, max_pixels)
    out["overview_shape"] = list(valid.shape)
    out["valid_fraction_estimate"] = float(valid.mean())
    bands = []
    for i in range(info.count):
        values = data[i][valid]
        entry: dict[str, Any] = {
            "index": i + 1,
            "dtype": info.dtypes[i],
            "colorinterp": info.colorinterp[i],
        }
        if values.size:
            p2, p98 = np.percentile(values, [2, 98])
            entry.update(
                min=float(values.min()), p2=float(p2), p98=float(p98), max=float(values.max())
            )
        else:
            entry.update(min=None, p2=None, p98=None, max=None)
        bands.append(entry)
    out["bands"] = bands
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def format_text(d: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`describe`'s dictionary."""
    lines = [f"File:        {d['path']} ({d['driver']})"]
    lines.append(f"Size:        {d['width']} x {d['height']} pixels, {d['count']} band(s)")
    crs = d["crs"]
    if crs is None:
        if d.get("has_gcps"):
            lines.append("CRS:         none (GCPs only; warp it with gdalwarp before segment)")
        else:
            lines.append("CRS:         none (not georeferenced: segment reads it in pixel "
                         "coordinates; --pixel-size gives its pixel size)")
    else:
        code = f"EPSG:{crs['epsg']}" if crs["epsg"] else "custom"
        kind = "geographic" if crs["is_geographic"] else "projected"
        lines.append(f"CRS:         {code} ({crs['name']}), {kind}")
    xres, yres = d["res"]
    units = "degrees" if crs and crs["is_geographic"] else "CRS units"
    res_line = f"Resolution:  {xres:.6g} x {yres:.6g} {units}"
    if d["ground_resolution_m"]:
        mx, my = d["ground_resolution_m"]
        approx = " at the centre" if crs and crs["is_geographic"] else ""
        res_line += f" = {mx:.4g} x {my:.4g} m per pixel{approx}"
    lines.append(res_line)
    left, bottom, right, top = d["bounds"]
    lines.append(
        f"Bounds:      left {left:.10g}, bottom {bottom:.10g}, "
        f"right {right:.10g}, top {top:.10g}"
    )
    masks = []
    if d["nodata"] is not None:
        masks.append(f"nodata value {d['nodata']}")
    if d["has_internal_mask"]:
        masks.append("internal mask")
    if d["has_alpha"]:
        masks.append("alpha band")
    valid = f"{100 * d['valid_fraction_estimate']:.1f}% valid (estimated)"
    kinds = ", ".join(masks) if masks else "no nodata, mask or alpha"
    lines.append(f"Valid data:  {kinds}; {valid}")
    ovr = ", ".join(str(o) for o in d["overviews"]) or "none"
    lines.append(f"Overviews:   {ovr}; blocks {d['block_shape'][0]}x{d['block_shape'][1]}")
    if d["overview_sampled"]:
        source = "windows sampled across the raster; it has no overviews (gdaladdo builds them)"
    else:
        source = f"a {d['overview_shape'][1]}x{d['overview_shape'][0]} decimated read"
    lines.append(f"Bands (value ranges estimated from {source}):")
    for b in d["bands"]:
        lines.append(
            f"  {b['index']:>3}  {b['dtype']:<8} {b['colorinterp']:<10} "
            f"min {_fmt(b['min'])}  p2 {_fmt(b['p2'])}  p98 {_fmt(b['p98'])}  max {_fmt(b['max'])}"
        )
    lines.append(f"Default RGB bands: {','.join(str(i) for i in d['default_bands'])}")
    return "\n".join(lines)


@click.command("info")
@click.argument("input", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@handle_errors
def command(input: str, as_json: bool) -> None:  # noqa: A002 - click argument name
    """Describe a raster: size, CRS, resolution, bands, nodata, value ranges.

    INPUT is anything GDAL opens: a file, a /vsizip/… path, an http(s):// URL or s3:// gs://
    az:// (GDAL_HTTP_* and AWS_* environment variables configure access).
    """
    d = describe(input)
    if as_json:
        click.echo(json.dumps(d, allow_nan=False))
    else:
        click.echo(format_text(d))
