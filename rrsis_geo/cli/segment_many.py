"""``rrsis-geo segment-many``: one sentence over many scenes on Dask distributed."""

from __future__ import annotations

import sys

import click

from rrsis_geo.cli.options import handle_errors
from rrsis_geo.cli.segment import options_from, segment_options


@click.command("segment-many")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-e", "--expression", required=True,
              help='The referring sentence, applied to every scene, e.g. "the large pond".')
@click.option("--out-dir", required=True, type=str,
              help="Folder for <stem>.gpkg per scene and merged.gpkg (created when missing).")
@segment_options
@click.option("--prob-rasters", is_flag=True,
              help="Also write each scene's probability mosaic as <stem>.prob.tif.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Worker processes of the local Dask cluster (each loads the model once).")
@click.option("--threads-per-worker", type=int, default=1, show_default=True,
              help="Scenes one local worker runs at the same time.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Use an existing Dask scheduler (e.g. tcp://host:8786) instead of a local "
              "cluster; inputs and --out-dir must be visible to every worker at the same paths.")
@click.option("--dst-crs", default=None,
              help="CRS of merged.gpkg (e.g. EPSG:4326). Default: the first scene's CRS.")
@click.option("--retries", type=int, default=1, show_default=True,
              help="Reruns of a scene that failed with an unexpected error (a scene whose worker "
              "died is rerun by the scheduler anyway).")
@click.option("--progress", type=click.Choice(["bar", "jsonl", "none"]), default="bar",
              show_default=True, help="bar: tqdm over scenes on stderr; jsonl: JSON lines on stdout.")
@click.option("--resume", is_flag=True,
              help="Skip scenes whose output is complete from an earlier run with the same "
              "inputs, sentence, options and weights.")
@handle_errors
def command(inputs, expression, out_dir, weights, device, precision, prob_rasters, workers,
            threads_per_worker, scheduler, dst_crs, retries, progress, resume, **kwargs):
    """Find what EXPRESSION refers to in every raster of INPUTS, on Dask distributed.

    INPUTS are files, globs ("tiles/*.tif") or text files of paths (@list.txt or list.txt, one
    path per line). Writes OUT_DIR/<stem>.gpkg per scene and OUT_DIR/merged.gpkg (all features,
    one CRS, a "source" attribute naming the scene). A scene that fails is reported and skipped.

    \b
    Exit codes: 0 every scene done; 3 some scenes failed (the others are written);
    when every scene failed with the same error, that error's code (e.g. 4 bad weights).

    \b
    Example:
      rrsis-geo segment-many "county/*.tif" -e "the large pond" --out-dir ponds --workers 4
    """
    from rrsis_geo.inference.many import (exit_code_for, expand_inputs, require_distributed,
                                          segment_many)
    from rrsis_geo.progress import Reporter

    require_distributed()
    threads = kwargs.pop("threads")
    opts = options_from(kwargs, resume=resume)
    rep = Reporter(progress)
    result = segment_many(expand_inputs(inputs), expression, out_dir, opts, weights=weights,
                          device=device, precision=precision, workers=workers,
                          threads_per_worker=threads_per_worker, scheduler=scheduler,
                          dst_crs=dst_crs, prob_rasters=prob_rasters, reporter=rep,
                          retries=retries, torch_threads=threads)
    payload = {k: v for k, v in result.items() if k != "scene_results"}
    rep.result(payload)
    code = exit_code_for(result)
    if code:
        if progress != "jsonl":
            click.echo(f"rrsis-geo: error: {len(result['failed'])} of {result['scenes']} scene(s) "
                       "failed; see the messages above", err=True)
        sys.exit(code)
