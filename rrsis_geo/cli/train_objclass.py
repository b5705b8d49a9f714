"""``rrsis-geo train-objclass WEIGHTS``: train the class check's object classifier on generated
chips and save it beside WEIGHTS, where ``segment`` finds it."""

from __future__ import annotations

import click

from rrsis_geo.cli.options import handle_errors


@click.command("train-objclass")
@click.argument("weights", type=str)
@click.option("--chips", type=click.IntRange(100, 20_000), default=6000, show_default=True,
              help="Generated chips to cut samples from (about 9 objects each; half of them "
              "with photographic textures and sensor effects). The samples stay in memory: "
              "about 0.6 MB per chip.")
@click.option("--max-minutes", type=click.FloatRange(0.1, 24 * 60), default=15.0,
              show_default=True, help="Training budget (the data is generated before it).")
@click.option("--seed", type=click.IntRange(0), default=2_000_000, show_default=True,
              help="First chip seed (validation chips: seed + 1000000).")
@click.option("--not-judged", default="", metavar="CLASS,CLASS",
              help="Classes the classifier answers but does not judge: a candidate for them is "
              "left to the referring model alone. For classes the referring model learned from "
              "real imagery (the shipped model: tree, building), where a classifier of "
              "generated chips knows less than it.")
@click.option("--num-threads", type=click.IntRange(1, 256), default=None,
              help="CPU threads (default: torch's choice).")
@click.option("--overwrite", is_flag=True, help="Replace an existing classifier file.")
@handle_errors
def command(weights, chips, max_minutes, seed, not_judged, num_threads, overwrite):
    """Train the object classifier of WEIGHTS' class check (X.objclass.safetensors beside
    X.safetensors).

    \b
    The class check of `segment` asks the referring model whether what it
    found is the named class or another one; a model that scores two
    look-alikes alike (a tennis and a basketball court) cannot say. This small
    classifier names the object under a candidate's mask instead, and lowers
    the score of a candidate it takes for another class or for no object.
    It learns the classes of the scene generator (`rrsis-geo synth`) from
    generated chips; README, "How it works", says how the check uses it.
    """
    import os
    import tempfile

    import torch

    from rrsis_geo.data.synth.vocabulary import CATEGORIES
    from rrsis_geo.errors import OutputError, UsageError, WeightsError
    from rrsis_geo.model.objclass import save_object_classifier, sibling_path
    from rrsis_geo.safety import check_outputs
    from rrsis_geo.train.objclass import evaluate, make_samples, train_object_classifier

    if not os.path.isfile(weights):
        raise WeightsError(f"weights file not found: {weights}")
    skip = [c.strip().lower() for c in not_judged.split(",") if c.strip()]
    unknown = [c for c in skip if c not in CATEGORIES]
    if unknown:
        raise UsageError(f"--not-judged: {', '.join(unknown)} is not a class of the generator "
                         f"({', '.join(CATEGORIES)})")
    out = sibling_path(weights)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    check_outputs([("WEIGHTS", weights)], [("the classifier", str(out))])
    if num_threads:
        torch.set_num_threads(num_threads)

    def say(msg: str) -> None:
        click.echo(f"rrsis-geo train-objclass: {msg}", err=True)

    say(f"generating samples from {chips} chips (seeds {seed}…)")
    train = make_samples(CATEGORIES, chips, seed, say=say)
    val = make_samples(CATEGORIES, max(100, chips // 10), seed + 1_000_000)
    say(f"{len(train)} training and {len(val)} validation samples; training for "
        f"{max_minutes:g} min")
    model, record = train_object_classifier(train, max_minutes=max_minutes, seed=seed, say=say)
    model.judged = [c for c in model.judged if c not in skip]
    ev = evaluate(model, val)
    record.update(chips=chips, chip_seed=seed, not_judged=skip,
                  val_accuracy=round(ev["accuracy"], 4), val_confusion=ev["confusion"])
    fd, tmp = tempfile.mkstemp(prefix=".objclass-", suffix=".tmp", dir=out.parent)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    try:
        save_object_classifier(model, tmp, record)
        os.chmod(tmp, 0o666 & ~mask)  # as a new file would be (the writer leaves it at 0600)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    per_class = ", ".join(
        f"{c} {row[i] / max(1, sum(row)):.2f}" for i, (c, row) in
        enumerate(zip(ev["classes"], ev["confusion"])))
    say(f"validation accuracy {ev['accuracy']:.3f} ({per_class}); wrote {out}")
