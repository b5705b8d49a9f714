"""``rrsis-geo train DATASET_ROOT``: train FIANet, model selection on val.

The recipe is described in docs/fianet.md §Training recipe.
"""

from __future__ import annotations

import os

import click

from rrsis_geo.cli.options import device_option, handle_errors


@click.command("train")
@click.argument("dataset_root", type=str)
@click.option("--format", "fmt", type=click.Choice(["refsegrs", "rrsisd"]), default="refsegrs",
              show_default=True, help="Dataset layout (our scene generator writes refsegrs).")
@click.option("--config", "config_name", type=click.Choice(["tiny", "official"]), default="tiny",
              show_default=True,
              help="tiny: small Swin + frozen MiniLM-L6, 192², trains on CPU. official: Swin-B + "
              "BERT-base, 480², for GPUs (start from pretrained weights with --weights, or "
              "from pretrained parts with --backbone-weights / --text-weights).")
@click.option("--out", required=True, type=str,
              help="Output folder: fianet_<config>.safetensors/.json (best on val), last.pt, "
              "metrics.jsonl, summary.json.")
@click.option("--epochs", type=int, default=None,
              help="Epochs of the poly schedule. Default: 30 (tiny), 60 RefSegRS / 40 RRSIS-D "
              "(official); with --max-minutes and no --epochs the budget decides.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Base learning rate. Default: 3e-4 (tiny), 5e-5 RefSegRS / 3e-5 RRSIS-D "
              "(official).")
@click.option("--img-size", type=int, default=None,
              help="Input side in pixels (multiple of 32). Default: 192 tiny, 480 official.")
@click.option("--seed", type=int, default=2401, show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue from OUT/last.pt (its settings are used; --max-minutes is a new "
              "budget for this run).")
@click.option("--max-minutes", type=float, default=None,
              help="Wall-clock budget: stops cleanly in time, keeps the best weights, and fits "
              "the learning-rate schedule to the budget.")
@click.option("--weights", "init_weights", type=str, default=None,
              help="Start from these weights (their layout replaces --config).")
@click.option("--backbone-weights", default=None, metavar="FILE|timm:NAME",
              help="Start the Swin backbone from an ImageNet Swin state dict: the Swin authors' "
              "released .pth (e.g. ImageNet-22k Swin-B for --config official) or a timm state "
              "dict (.pth/.safetensors); position tables are interpolated when the window "
              "differs. timm:NAME (e.g. timm:swin_base_patch4_window12_384.ms_in22k) lets timm "
              "download it (needs a connection). Not with --weights.")
@click.option("--text-weights", type=str, default=None,
              help="Start the text encoder from a local Hugging Face BERT folder (config.json + "
              "weights; for --config official a bert-base-uncased). Not with --weights.")
@click.option("--extend-classes/--no-extend-classes", default=None,
              help="Add the classes the training split names but the model's class list lacks "
              "(metadata.jsonl categories, dataset.json classes, frequent head nouns of "
              "expressions without a known class), so that the text decoupling marks them as "
              "object words; the saved model records the extended list. Default: on with "
              "--weights, off otherwise (a new model takes the dataset's own list).")
@click.option("--add-classes", default=None, metavar="PHRASE,PHRASE",
              help="Class phrases to add to the class list in any case, e.g. "
              "'solar panel,pool'.")
@click.option("--val-split", default="val", show_default=True,
              help="Split used for model selection.")
@click.option("--val-every", type=int, default=None,
              help="Also validate (and keep the best) every N iterations inside an epoch; "
              "useful when an epoch is long compared with the budget.")
@click.option("--select", "select_metric", type=click.Choice(["mIoU", "oIoU", "gIoU"]),
              default="mIoU", show_default=True,
              help="Validation metric that picks the best epoch. gIoU: mIoU where a sentence "
              "that names nothing in the chip scores 1 if nothing is painted (rewards "
              "answering 'no target'; mIoU scores such sentences 0 whatever the model does).")
@click.option("--brightness", type=float, default=None,
              help="Training brightness jitter (one factor for all channels, so colour words "
              "stay true). Default 0.1 tiny, 0 official.")
@click.option("--flips/--no-flips", default=False, show_default=True,
              help="Random flips left-right and top-bottom; the sentence's direction words are "
              "mirrored with the pixels ('on the left' becomes 'on the right').")
@click.option("--colour-jitter", type=float, default=0.0, show_default=True,
              help="Random saturation, white balance, contrast and, now and then, grey, of this "
              "strength (0-1; 0.3 is moderate), for sentences that name no colour or tone: "
              "teaches another sensor's or season's look.")
@click.option("--coord-channels", type=click.Choice(["0", "2"]), default=None,
              help="2: the patch embedding also sees each pixel's x and y in the image frame "
              "(a position signal for chip-frame words; not in the official layout). "
              "Default: 2 tiny, 0 official.")
@click.option("--distill", "distill", multiple=True, metavar="WEIGHTS",
              help="Teacher model (repeatable): the student is also pulled towards its "
              "per-pixel answers, KL(teacher || student) added to the loss. --weights BASE "
              "--distill BASE keeps what BASE knew while fine-tuning on new imagery.")
@click.option("--distill-ids", "distill_ids", multiple=True, metavar="GLOB,GLOB",
              help="Per --distill, in the same order: the training sample ids it teaches, "
              "e.g. 'p0_*,p2_*' ('*': all). A sample goes to the first teacher that matches; "
              "without this option one teacher teaches every sample.")
@click.option("--distill-weight", type=float, default=1.0, show_default=True,
              help="Weight of the teacher term against the supervised loss.")
@click.option("--threads", "num_threads", type=int, default=None,
              help="CPU threads (default: all cores).")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@handle_errors
def command(dataset_root, fmt, config_name, out, epochs, batch_size, lr, img_size, seed, resume,
            max_minutes, init_weights, backbone_weights, text_weights, extend_classes, add_classes,
            val_split, val_every, select_metric, brightness, flips, colour_jitter, coord_channels,
            distill, distill_ids, distill_weight, num_threads, device, quiet):
    """Train FIANet on DATASET_ROOT and keep the weights that score best on the val split."""
    import math
    import os

    from rrsis_geo.errors import BadInputError, UsageError
    from rrsis_geo.safety import check_outputs
    from rrsis_geo.train.distill import check_distill_settings, check_teacher_files
    from rrsis_geo.train.loop import train

    for name, value in (("--lr", lr), ("--max-minutes", max_minutes)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{name} must be a positive number, got {value}")
    if brightness is not None and not (math.isfinite(brightness) and brightness >= 0):
        raise UsageError(f"--brightness must be a finite number >= 0, got {brightness}")
    if not (math.isfinite(colour_jitter) and 0 <= colour_jitter <= 1):
        raise UsageError(f"--colour-jitter must be a number from 0 to 1, got {colour_jitter}")
    check_distill_settings(distill, distill_ids, distill_weight)
    check_teacher_files(distill)  # before the datasets are read
    if not os.path.isdir(dataset_root):
        raise BadInputError(f"dataset folder not found: {dataset_root}")
    backbone_file = backbone_weights if backbone_weights and not str(
        backbone_weights).startswith("timm:") else None
    inputs = [("--weights", init_weights), ("--backbone-weights", backbone_file),
              ("--text-weights", text_weights), *(("--distill", t) for t in distill)]
    check_outputs(inputs, [("--out", out)], folders_ok=[out])
    _check_not_overwritten(inputs, out)
    result = train(dataset_root, format=fmt, config_name=config_name, out=out, epochs=epochs,
                   batch_size=batch_size, lr=lr, img_size=img_size, seed=seed, resume=resume,
                   max_minutes=max_minutes, val_split=val_split, progress=not quiet,
                   init_weights=init_weights, select_metric=select_metric, val_every=val_every,
                   brightness=brightness, flips=flips, colour_jitter=colour_jitter,
                   num_threads=num_threads, device=device,
                   coord_channels=None if coord_channels is None else int(coord_channels),
                   backbone_weights=backbone_weights, text_weights=text_weights,
                   extend_classes=extend_classes,
                   add_classes=[c for c in (add_classes or "").split(",") if c.strip()],
                   distill=list(distill), distill_ids=list(distill_ids),
                   distill_weight=distill_weight,
                   log=lambda msg: click.echo(f"rrsis-geo train: {msg}", err=True))
    s = result.summary
    if result.weights is None:
        click.echo("rrsis-geo train: no validation finished; no weights written", err=True)
        return
    best = result.best_metrics or {}
    click.echo(
        f"rrsis-geo train: best val {s['select_metric']} {best.get(s['select_metric'], 0):.4f} "
        f"at epoch {result.best_epoch}; {result.iterations} iterations, "
        f"{s['samples_per_s']} samples/s; weights {result.weights}", err=True)
    trained = result.trained_classes
    click.echo("rrsis-geo train: " + (
        f"trained to find: {', '.join(trained)} (segment answers \"no target\" for other "
        "classes)" if trained else "the classes it was trained to find are not known (a "
        "training sentence without a category, or starting weights that do not say), so "
        "segment refuses none"), err=True)


def _check_not_overwritten(inputs, out: str) -> None:
    """Starting weights must not be among the files training writes into --out (fine-tuning
    ``runs/a/fianet_tiny.safetensors`` with ``--out runs/a`` would replace them)."""
    import os

    from rrsis_geo.errors import OutputError
    from rrsis_geo.safety import same_file

    names = [f"fianet_{c}{ext}" for c in ("tiny", "official") for ext in (".safetensors", ".json")]
    written = [os.path.join(out, n) for n in names + ["last.pt", "summary.json", "metrics.jsonl"]]
    for label, path in inputs:
        if not path or not os.path.exists(path):
            continue
        candidates = [path]
        if str(path).endswith(".safetensors"):
            candidates.append(os.path.splitext(path)[0] + ".json")  # the model card beside it
        for p in candidates:
            for w in written:
                if os.path.exists(w) and same_file(p, w):
                    raise OutputError(f"{label} {path} would be overwritten by training's "
                                      f"output {w}; give --out another folder")
