"""``rrsis-geo evaluate DATASET_ROOT``: mIoU, oIoU and precision@0.5…0.9.

The metrics are described in docs/fianet.md §Metrics.
"""

from __future__ import annotations

import os

import click

from rrsis_geo.cli.options import device_option, handle_errors, weights_option


@click.command("evaluate")
@click.argument("dataset_root", type=str)
@click.option("--format", "fmt", type=click.Choice(["refsegrs", "rrsisd"]), default="refsegrs",
              show_default=True, help="Dataset layout (our scene generator writes refsegrs).")
@click.option("--split", default="test", show_default=True)
@weights_option
@click.option("--json", "json_out", type=str, default=None,
              help="Write the metrics here (keys mIoU, oIoU, precision@0.5…0.9, gIoU, count, "
              "subsets, baselines).")
@click.option("--per-sample", type=str, default=None,
              help="Also write one JSON line per sample (id, expression, type, iou).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--threads", "num_threads", type=int, default=None,
              help="CPU threads (default: all cores).")
@device_option
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "int8"]),
              default="fp32", show_default=True,
              help="Precision of the forward pass, as segment's --precision (to measure what "
              "a faster path costs in accuracy).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def command(dataset_root, fmt, split, weights, json_out, per_sample, batch_size, num_threads,
            device, precision, quiet):
    """Evaluate weights on a dataset split: overall, per expression type and, for generated data,
    the disambiguation subset against the "all objects of that category" baseline."""
    from rrsis_geo.train.evaluation import evaluate_weights, format_table, write_json, write_jsonl

    _check_paths(dataset_root, weights, json_out, per_sample)
    report, samples = evaluate_weights(dataset_root, fmt=fmt, split=split, weights=weights,
                                       batch_size=batch_size, device=device,
                                       num_threads=num_threads, progress=not quiet,
                                       precision=precision)
    click.echo(format_table(report, samples), err=True)
    if json_out:
        write_json(json_out, report)
    if per_sample:
        write_jsonl(per_sample, samples)


def _check_paths(dataset_root, weights, json_out, per_sample) -> None:
    """Before the model loads: the dataset is a folder; the reports overwrite no input."""
    import os

    from rrsis_geo.errors import BadInputError
    from rrsis_geo.safety import check_outputs

    if not os.path.isdir(dataset_root):
        raise BadInputError(f"dataset folder not found: {dataset_root}")
    inputs = [("weights", weights)]
    if weights:
        inputs.append(("model card", os.path.splitext(weights)[0] + ".json"))
    check_outputs(inputs, [("--json", json_out), ("--per-sample", per_sample)])
