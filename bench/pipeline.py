"""Pipeline benchmarks (issue: the spine). Prints ratios measured in one run on this machine.

(a) pipeline wall time ÷ (images × model-only forward time per tile) on a 4096² scene — how much
    the tiling, reading, blending, selection and writing add on top of the model (goal ≤ 1.15).
    Images = tiles + the class check's windows (model work the scene-level selection asks for;
    a check window smaller than a tile counts for its share of a tile's pixels), printed apart.
    ``--repeats`` runs, each timed between two model-only timings; the headline is the median of
    those per-run ratios (this machine's speed flips between two levels ~30 % apart, see
    ``_child``), the best run against the best model-only timing is printed too. Each run also
    prints the time of the tile forwards, of the class check and the total, and the check ÷
    tiles ratio (goal ≤ 0.3 on 4096²);
(c) the same three times and the check ÷ tiles ratio on a 2048² scene (goal ≤ 0.5);
(b) peak RSS of ``segment`` on a 16384² scene ÷ peak RSS on a 2048² scene — memory must not grow
    with the raster (goal ≤ 1.25).

Each measurement runs in its own process (peak RSS is per process). ``--config demo`` (default):
the shipped demo model when installed, else a randomly initialized FIANet-tiny (same compute).
``--config official``: FIANet's official layout (Swin-B + BERT-base, RRSIS-D's 20 classes, 480²
input) with random weights (decoder output spread as in bench/model.py so that there are
candidates to check), measured on (c) only (``--size`` sets its scene side); the cost is the
figure, not the answer. Usage::

    python bench/pipeline.py [--skip-16k] [--repeats 5] [--tile-size 192] [--batch-size 4] [--workdir DIR]
    python bench/pipeline.py --config official [--size 2048] [--threads 2]
    python bench/pipeline.py --device cuda --skip-16k     # on a GPU: tiles/s and the ratios there
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(args: argparse.Namespace) -> None:
    """Runs in a subprocess: one pipeline run (+ optional model-only timing), prints JSON."""
    import numpy as np
    import torch

    from rrsis_geo.defaults import DEMO_WEIGHTS
    from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
    from rrsis_geo.inference.segmenter import Segmenter
    from rrsis_geo.progress import peak_rss_mb

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config == "official":
        from rrsis_geo.model import FIANet, FIANetConfig

        model = FIANet(FIANetConfig.official(3)).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_var.uniform_(0.5, 2.0)
            model.classifier.conv1_1.weight.mul_(100.0)
        model.config.meta.update({"input_size": 480, "gsd": None, "classes": "rrsisd",
                                  "max_tokens": 22})
        seg = Segmenter(model=model, device=args.device, precision=args.precision)
        model_name = "FIANet official layout (random init)"
    elif DEMO_WEIGHTS.exists():
        seg = Segmenter(DEMO_WEIGHTS, device=args.device, precision=args.precision)
        model_name = "demo model"
    else:
        from rrsis_geo.model import FIANet, FIANetConfig

        model = FIANet(FIANetConfig.tiny())
        model.meta = {"input_size": 192, "gsd": None, "classes": "all", "max_tokens": 20}
        seg = Segmenter(model=model, device=args.device, precision=args.precision)
        model_name = "FIANet-tiny (random init)"
    # a class of the model's list, so that the class check applies (RRSIS-D has no building)
    expr = "the largest storage tank" if args.config == "official" else "the largest building"
    out = Path(args.workdir) / f"out_{Path(args.raster).stem}.gpkg"
    tile_size = args.tile_size or seg.input_size
    overlap = args.overlap if args.overlap is not None else tile_size // 4
    batch = seg.resolve_batch_size(args.batch_size, tile_size)  # "auto": from free GPU memory
    opts = SegmentOptions(tile_size=tile_size, overlap=overlap, batch_size=batch,
                          gsd="native", check_budget=args.check_budget)
    imgs = np.random.default_rng(0).random((batch, 3, tile_size, tile_size), dtype=np.float32)

    def model_only(n: int) -> float:
        """Seconds per tile of back-to-back forwards (text pre-encoded, nothing else), reading
        the sentence the pipeline's tiles read ("the building": the superlative is judged on the
        whole scene)."""
        from rrsis_geo.text.scene_words import tile_expression

        text = seg.encode(tile_expression(expr))
        seg.predict(imgs, text)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            seg.predict(imgs, text)
        if seg.device.type == "cuda":
            torch.cuda.synchronize(seg.device)
        return (time.perf_counter() - t0) / (n * batch)

    # This machine's CPU speed flips between two levels ~30 % apart over seconds to minutes
    # (CPU time per forward moves with the wall time, so it is not steal time). One pipeline run
    # against one model-only timing taken minutes apart is therefore noise. Instead, repeat
    # (model-only, pipeline, model-only) in this process: each run's ratio uses the model-only
    # timings taken right before and after it, and the median over the runs drops the runs
    # during which the speed flipped. The best run against the best model-only timing is also
    # reported; it is biased upwards (a 1 s model-only timing catches the fast level more often
    # than a 12 s pipeline run does).
    walls, per_tile, runs, splits = [], [], [], []
    res = {}
    for rep in range(args.repeats):
        before = model_only(args.model_only_reps) if args.model_only else None
        t0 = time.perf_counter()
        res = segment_raster(args.raster, expr, str(out), opts, segmenter=seg)
        wall = time.perf_counter() - t0
        walls.append(wall)
        splits.append({"tiles_s": res["model_seconds"], "check_s": res["check_seconds"],
                       "total_s": wall})
        if args.model_only:
            after = model_only(args.model_only_reps)
            per_tile += [before, after]
            images = res["model_tiles"] + res["check_windows"]
            runs.append(wall / (images * (before + after) / 2))
    result = {"wall_s": min(walls), "walls_s": walls, "tiles": res["tiles"],
              "model_tiles": res["model_tiles"], "check_images": res["check_images"],
              "check_windows": res["check_windows"], "check_s": res["check_seconds"],
              "splits": splits, "peak_rss_mb": peak_rss_mb(), "model": model_name,
              "device": res["device"], "batch_size": batch}
    if args.model_only:
        result["model_s_per_tile"] = min(per_tile)
        result["model_s_per_tile_all"] = per_tile
        result["run_ratios"] = runs
    print("RESULT " + json.dumps(result))


def _run_child(raster: Path, args: argparse.Namespace, model_only: bool,
               repeats: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--raster", str(raster), "--workdir",
           args.workdir, "--batch-size", str(args.batch_size), "--config", args.config,
           "--threads", str(args.threads), "--precision", args.precision,
           "--device", args.device,
           "--check-budget", str(args.check_budget),
           "--model-only-reps", str(args.model_only_reps),
           "--repeats", str(repeats or (args.repeats if model_only else 1))]
    cmd += ["--model-only"] if model_only else []
    cmd += ["--tile-size", str(args.tile_size)] if args.tile_size else []
    cmd += ["--overlap", str(args.overlap)] if args.overlap is not None else []
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")


def _scene(size: int, workdir: str) -> Path:
    path = Path(workdir) / f"scene_{size}.tif"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "rrsis_geo", "synth", "scene", str(path), "--size",
                        str(size), "--seed", "7"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _print_splits(label: str, r: dict, goal: float) -> None:
    """Tiles (model forwards of the tile pass), check and total seconds of each run."""
    ratios = [x["check_s"] / x["tiles_s"] for x in r["splits"]]
    runs = "; ".join(f"tiles {x['tiles_s']:.1f} s, check {x['check_s']:.1f} s, total "
                     f"{x['total_s']:.1f} s" for x in r["splits"])
    tiles_per_s = r["model_tiles"] / min(x["tiles_s"] for x in r["splits"])
    print(f"{label} ({r['device']}, {tiles_per_s:.2f} tiles/s in the model): "
          f"{r['model_tiles']} tile forwards, {r['check_images']} check windows "
          f"({r['check_windows']:.1f} tile-equivalents); {runs}; check ÷ tiles = "
          f"{_median(ratios):.3f} median of {len(ratios)} (goal ≤ {goal})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raster")
    p.add_argument("--model-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-only-reps", type=int, default=15, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None)
    p.add_argument("--config", choices=["demo", "official"], default="demo",
                   help="demo: the demo model, (a), (c) and (b); official: random official-layout "
                   "weights, (c) only")
    p.add_argument("--tile-size", type=int, default=None, help="default: the model's input size")
    p.add_argument("--overlap", type=int, default=None, help="default: a quarter of the tile")
    p.add_argument("--batch-size", default="4",
                   help="as segment's --batch-size (auto: from free GPU memory, 4 on CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--precision", default="auto", help="as segment's --precision")
    p.add_argument("--device", default="cpu", help="as segment's --device (cpu, cuda, auto)")
    p.add_argument("--check-budget", default="auto", help="as segment's --check-budget")
    p.add_argument("--size", type=int, default=2048, help="scene side of (c)")
    p.add_argument("--repeats", type=int, default=5,
                   help="(a): pipeline runs, each between two model-only timings; the ratio uses "
                   "the best of each side")
    p.add_argument("--repeats-c", type=int, default=3, help="(c): pipeline runs")
    p.add_argument("--skip-4k", action="store_true", help="skip (a)")
    p.add_argument("--skip-c", action="store_true", help="skip (c)")
    p.add_argument("--skip-16k", action="store_true", help="skip (b)")
    p.add_argument("--big", type=int, default=16384, help="side of the large scene for (b)")
    p.add_argument("--rss-tile-size", type=int, default=512,
                   help="tile size for (b) (fewer, larger tiles keep the 16384² run short)")
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rrsis-bench-")
        args.workdir = tmp.name
    print(f"cpu cores: {os.cpu_count()}, config {args.config}, tile {args.tile_size or 'model'}, "
          f"overlap {args.overlap if args.overlap is not None else 'tile/4'}, batch "
          f"{args.batch_size}, threads {args.threads or 'default'}, precision {args.precision}, "
          f"check budget {args.check_budget}", flush=True)
    if args.config == "official":
        args.skip_4k = args.skip_16k = True
        args.model_only_reps = 2
    if not args.skip_4k:
        r4k = _run_child(_scene(4096, args.workdir), args, model_only=True)
        images = r4k["model_tiles"] + r4k["check_windows"]
        ratio_a = r4k["wall_s"] / (images * r4k["model_s_per_tile"])
        print(f"model: {r4k['model']}")
        runs = sorted(r4k["run_ratios"])
        print(f"(a) 4096² scene: {r4k['tiles']} tiles ({r4k['model_tiles']} through the model) + "
              f"{r4k['check_windows']:.1f} tile-equivalents of class-check windows, "
              f"{len(runs)} runs, each between two model-only timings: wall ÷ (images × forward) = "
              f"{_median(runs):.3f} median (range {runs[0]:.3f}-{runs[-1]:.3f}) (goal ≤ 1.15); "
              f"best pipeline run ÷ best model-only timing = {ratio_a:.3f} "
              f"(pipeline {', '.join(f'{w:.1f}' for w in r4k['walls_s'])} s; model-only "
              f"{min(r4k['model_s_per_tile_all']) * 1000:.1f}-{max(r4k['model_s_per_tile_all']) * 1000:.1f}"
              f" ms/tile)", flush=True)
        _print_splits("(a) 4096² scene", r4k, 0.3)
    if not args.skip_c:
        rc = _run_child(_scene(args.size, args.workdir), args, model_only=False,
                        repeats=args.repeats_c)
        print(f"model: {rc['model']}")
        _print_splits(f"(c) {args.size}² scene", rc, 0.5)
    if not args.skip_16k:
        args.tile_size, args.overlap = args.rss_tile_size, args.rss_tile_size // 8
        r2k = _run_child(_scene(2048, args.workdir), args, model_only=False)
        rbig = _run_child(_scene(args.big, args.workdir), args, model_only=False)
        ratio_b = rbig["peak_rss_mb"] / r2k["peak_rss_mb"]
        print(f"(b) tile {args.tile_size}, overlap {args.overlap}; peak RSS: 2048² {r2k['peak_rss_mb']:.0f} MiB ({r2k['wall_s']:.0f} s), "
              f"{args.big}² {rbig['peak_rss_mb']:.0f} MiB ({rbig['wall_s']:.0f} s) → ratio "
              f"{ratio_b:.3f}  (goal ≤ 1.25)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
