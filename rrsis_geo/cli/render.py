"""``rrsis-geo render``: a PNG quick-look of a raster with a result layer and its sentence."""

from __future__ import annotations

import click

from rrsis_geo.cli import types
from rrsis_geo.cli.options import handle_errors


@click.command("render")
@click.argument("raster", type=str)
@click.option("-o", "--output", required=True, type=str, help="PNG file.")
@click.option("--vector", type=str, default=None,
              help="Result layer to outline (yellow), e.g. the output of segment.")
@click.option("--layer", default=None, help="Layer of --vector (default: the first).")
@click.option("-e", "--expression", default=None, help="Caption: the sentence.")
@click.option("--truth", type=str, default=None,
              help="Reference polygons to outline in cyan (e.g. SCENE.tif.targets.gpkg).")
@click.option("--truth-expression", default=None,
              help="Only draw truth rows whose expression equals this.")
@click.option("--max-side", type=int, default=1024, show_default=True, help="PNG size.")
@click.option("--zoom", is_flag=True, help="Zoom on the found objects instead of the scene.")
@click.option("--bands", type=types.BANDS, default=None, metavar="TEXT",
              help="Three band numbers for R,G,B, e.g. 3,2,1 for a B,G,R,NIR raster (one number: "
              "gray). Default: the raster's RGB colour interpretation, else 1,2,3 — as segment.")
@handle_errors
def command(raster, output, vector, layer, expression, truth, truth_expression, max_side, zoom,
            bands):
    """Render RASTER (decimated) with result polygons and the sentence to a PNG.

    Use the same --bands as for segment so that the picture shows what the model saw.
    """
    from rrsis_geo.geo.render import render_png
    from rrsis_geo.safety import check_outputs

    check_outputs([("raster", raster), ("--vector", vector), ("--truth", truth)],
                  [("output", output)])
    render_png(raster, output, vector=vector, layer=layer, expression=expression, truth=truth,
               truth_filter=truth_expression, max_side=max_side,
               crop_to="result" if zoom else "scene", bands=bands)
    click.echo(f"wrote {output}", err=True)
