"""Fine-tuning from the demo model on your own imagery: test-block mIoU before and after.

Usage:
    python bench/finetune.py [--minutes 12] [--threads 2] [--cases neon,generated]
                             [--neon-dir DIR | --deepforest-wheel WHL] [--json OUT.json]
                             [--keep DIR]

For each case, measured in one run:

1. ``rrsis-geo dataset build`` (the library function) makes a referring dataset with the
   builder's own spatial split: test blocks held out, a one-chip gutter, overlapping train chips
   (``--stride 48``), chips at the demo model's resolution (``--gsd auto``);
2. the starting model (the shipped demo model) is evaluated on the test split;
3. ``rrsis-geo train DATA --weights DEMO --max-minutes M`` fine-tunes it (library
   ``train``, its defaults: model selection on the val split, schedule fitted to the budget);
4. the fine-tuned best weights are evaluated on the same test split.

Cases:

* ``neon``: the real NEON orthophoto ``2019_YELL_2_528000_4978000_image_crop2`` of the
  ``deepforest`` wheel with its 574 tree-crown boxes (crowns as ellipses), as
  ``scripts/neon_crop2.py`` writes it (``yell_crop2.tif`` + ``yell_crop2_boxes.csv``). Give the
  folder with ``--neon-dir`` (default: ``$RRSIS_GEO_NEON_DIR``, else ``data/neon`` in the
  checkout) or the wheel with ``--deepforest-wheel`` (``pip download --no-deps
  deepforest==2.1.0``), which is converted into the temporary folder.
* ``generated``: ``rrsis-geo synth scene OUT.tif --objects`` (2048², seed 900123, far from the
  seeds the demo model was trained on), every object of the scene as the label layer
  (``--class-field category``).

mIoU is ``evaluate``'s: per-sentence IoU at the model's input size, 0 when prediction and
target are both empty (so the few "absent" test sentences score 0 for every model). The JSON
(``--json``) holds the full metric reports, the split sizes and the training summaries.
Everything is written into a temporary folder removed at the end, unless ``--keep DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# before torch is imported (as the CLI does): OpenMP threads wait passively
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "sample_data" / "demo_model" / "fianet_tiny.safetensors"
CASES = ("neon", "generated")
SCENE_SEED = 900123
SCENE_SIZE = 2048
STRIDE = 48


def log(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


def neon_inputs(args, work: Path) -> tuple[Path, Path]:
    """The NEON crop (GeoTIFF + deepforest CSV), from --neon-dir or made from the wheel."""
    if args.deepforest_wheel:
        out = work / "neon_src"
        out.mkdir()
        log(f"converting {args.deepforest_wheel} with scripts/neon_crop2.py")
        subprocess.run([sys.executable, str(ROOT / "scripts" / "neon_crop2.py"),
                        str(args.deepforest_wheel), str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        folder = out
    else:
        folder = Path(args.neon_dir or os.environ.get("RRSIS_GEO_NEON_DIR")
                      or ROOT / "data" / "neon")
    tif, csv = folder / "yell_crop2.tif", folder / "yell_crop2_boxes.csv"
    if not (tif.is_file() and csv.is_file()):
        sys.exit(f"finetune.py: error: {folder} lacks yell_crop2.tif / yell_crop2_boxes.csv; "
                 "make them with `pip download --no-deps deepforest==2.1.0 -d wheels/ && "
                 "python scripts/neon_crop2.py wheels/deepforest-2.1.0-py3-none-any.whl DIR` "
                 "and pass --neon-dir DIR (or pass --deepforest-wheel)")
    return tif, csv


def build_case(case: str, args, work: Path):
    """Build the case's dataset; returns (dataset folder, builder summary)."""
    from rrsis_geo.data.layers import BuildOptions, build_dataset, format_summary

    ds = work / case / "dataset"
    ds.parent.mkdir(parents=True)
    if case == "neon":
        raster, labels = neon_inputs(args, work)
        opts = BuildOptions(box_mask="ellipse", stride=STRIDE, gsd="auto", weights=str(args.start))
    else:
        raster = work / case / "scene.tif"
        log(f"synth scene {SCENE_SIZE}² seed {SCENE_SEED} --objects")
        subprocess.run([sys.executable, "-m", "rrsis_geo.cli.main", "synth", "scene",
                        str(raster), "--objects", "--size", str(SCENE_SIZE),
                        "--seed", str(SCENE_SEED)], check=True, cwd=ROOT,
                       stderr=subprocess.DEVNULL)
        labels = Path(f"{raster}.objects.gpkg")
        opts = BuildOptions(class_field="category", stride=STRIDE, gsd="auto", weights=str(args.start))
    t = time.monotonic()
    summary = build_dataset(raster, [labels], ds, opts, progress=False, echo=log)
    log(f"dataset build ({time.monotonic() - t:.0f} s):\n{format_summary(summary)}")
    n_test = summary["sentences"].get("test", 0)
    if n_test == 0:
        sys.exit(f"finetune.py: error: the {case} dataset has no test sentence")
    return ds, summary


def evaluate(ds: Path, weights: Path, threads: int) -> dict:
    from rrsis_geo.train.evaluation import evaluate_weights

    report, samples = evaluate_weights(ds, split="test", weights=weights, num_threads=threads)
    present = [s for s in samples if s["target_pixels"] > 0]
    report["mIoU_with_referent"] = (sum(s["iou"] for s in present) / len(present)
                                    if present else None)
    report["per_sample"] = samples
    return report


def run_case(case: str, args, work: Path) -> dict:
    from rrsis_geo.train.loop import train

    ds, summary = build_case(case, args, work)
    t = time.monotonic()
    start = evaluate(ds, args.start, args.threads)
    log(f"{case}: starting model, test mIoU {start['mIoU']:.4f} "
        f"({time.monotonic() - t:.0f} s)")
    run = work / case / "run"
    t = time.monotonic()
    res = train(ds, out=run, init_weights=str(args.start), max_minutes=args.minutes,
                num_threads=args.threads, progress=False,
                log=lambda m: log(f"{case}: train: {m}"))
    train_min = (time.monotonic() - t) / 60.0
    if res.weights is None:
        sys.exit(f"finetune.py: error: {case}: training finished no validation; no weights")
    tuned = evaluate(ds, res.weights, args.threads)
    log(f"{case}: fine-tuned, test mIoU {tuned['mIoU']:.4f}")
    return {
        "case": case,
        "sentences": {k: summary["sentences"].get(k, 0) for k in ("train", "val", "test")},
        "test_chips": summary["chips"].get("test", 0),
        "dataset": {k: summary[k] for k in ("gsd", "chip_size", "stride", "block_size_m",
                                            "labels", "chips", "blocks", "per_type")},
        "start": start, "finetuned": tuned,
        "gain": tuned["mIoU"] - start["mIoU"],
        "budget_minutes": args.minutes, "train_minutes": train_min,
        "iterations": res.iterations, "best_epoch": res.best_epoch,
        "train_summary": {k: v for k, v in res.summary.items() if k != "settings"},
    }


def table(rows: list[dict]) -> str:
    head = (f"{'case':<10} {'train/val/test sent.':>21} {'test chips':>10} {'start mIoU':>10} "
            f"{'tuned mIoU':>10} {'gain':>7} {'minutes':>7} {'iters':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["sentences"]
        lines.append(
            f"{r['case']:<10} {s['train']:>9}/{s['val']}/{s['test']:<5} {r['test_chips']:>10} "
            f"{r['start']['mIoU']:>10.3f} {r['finetuned']['mIoU']:>10.3f} {r['gain']:>+7.3f} "
            f"{r['train_minutes']:>7.1f} {r['iterations']:>6}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=12.0,
                    help="CPU minutes of fine-tuning per case (default 12)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads (default: all cores)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of neon,generated")
    ap.add_argument("--neon-dir", default=None,
                    help="folder with yell_crop2.tif and yell_crop2_boxes.csv "
                    "(scripts/neon_crop2.py); default $RRSIS_GEO_NEON_DIR, else data/neon")
    ap.add_argument("--deepforest-wheel", default=None,
                    help="deepforest-2.1.0 wheel to make the NEON crop from instead")
    ap.add_argument("--start-weights", "--start", dest="start", type=Path, default=DEMO,
                    help="the starting model (default: the shipped one). The README's figures "
                    "start from the first demo model, trained on generated scenes only: the "
                    "shipped model has seen the north part of the NEON crop, so starting from it "
                    "the NEON case is not a clean test")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--keep", default=None,
                    help="keep datasets and runs in this new folder (default: a temporary "
                    "folder, removed at the end)")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        ap.error(f"--cases takes a comma list of {', '.join(CASES)}; got {args.cases!r}")
    if not args.minutes > 0:
        ap.error("--minutes must be > 0")
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.keep:
        work = Path(args.keep)
        if work.exists() and any(work.iterdir()):
            ap.error(f"--keep {work}: exists and is not empty")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="rrsis-finetune-"))

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    rows = []
    try:
        for case in cases:
            rows.append(run_case(case, args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"Fine-tuning {args.start} for {args.minutes:g} min per case, "
          f"{args.threads} threads; test-block mIoU (evaluate's; absent sentences score 0)")
    print(table(rows))
    for r in rows:
        a, b = r["start"]["mIoU_with_referent"], r["finetuned"]["mIoU_with_referent"]
        if a is not None:
            print(f"{r['case']}: sentences with a referent only: {a:.3f} -> {b:.3f}; "
                  f"oIoU {r['start']['oIoU']:.3f} -> {r['finetuned']['oIoU']:.3f}")
    print("goal (issue 14): fine-tuned >= 0.5 and gain >= +0.3: "
          + ", ".join(f"{r['case']} {'met' if r['finetuned']['mIoU'] >= 0.5 and r['gain'] >= 0.3 else 'not met'}"
                      for r in rows)
          + f"; total {(time.monotonic() - t0) / 60:.1f} min, load average "
          f"{os.getloadavg()[0]:.1f}")
    if args.json:
        doc = {"minutes": args.minutes, "threads": args.threads, "cases": rows}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
