"""Pipeline benchmarks (issue: the spine). Prints ratios measured in one run on this machine.

(a) pipeline wall time ÷ (tiles × model-only forward time per tile) on a 4096² scene — how much
    the tiling, reading, blending, selection and writing add on top of the model (goal ≤ 1.15);
(b) peak RSS of ``segment`` on a 16384² scene ÷ peak RSS on a 2048² scene — memory must not grow
    with the raster (goal ≤ 1.25).

Each measurement runs in its own process (peak RSS is per process). The model is the shipped demo
model when installed, else a randomly initialized FIANet-tiny (same compute). Usage::

    python bench/pipeline.py [--skip-16k] [--tile-size 192] [--batch-size 4] [--workdir DIR]
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
    from rrsis_geo.inference.pipeline import SegmentOptions, Segmenter, segment_raster
    from rrsis_geo.progress import peak_rss_mb

    torch.manual_seed(0)
    if DEMO_WEIGHTS.exists():
        seg = Segmenter(DEMO_WEIGHTS, device="cpu")
        model_name = "demo model"
    else:
        from rrsis_geo.model import FIANet, FIANetConfig

        model = FIANet(FIANetConfig.tiny())
        model.meta = {"input_size": 192, "gsd": None, "classes": "all", "max_tokens": 20}
        seg = Segmenter(model=model, device="cpu")
        model_name = "FIANet-tiny (random init)"
    expr = "the largest building"
    out = Path(args.workdir) / f"out_{Path(args.raster).stem}.gpkg"
    opts = SegmentOptions(tile_size=args.tile_size, overlap=args.overlap,
                          batch_size=args.batch_size, gsd="native")
    imgs = np.random.default_rng(0).random((args.batch_size, 3, args.tile_size, args.tile_size),
                                           dtype=np.float32)

    def model_only(n: int) -> float:
        """Seconds per tile of back-to-back forwards (text pre-encoded, nothing else)."""
        text = seg.encode(expr)
        seg.predict(imgs, text)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            seg.predict(imgs, text)
        return (time.perf_counter() - t0) / (n * args.batch_size)

    # this machine's speed drifts over minutes: time the model just before AND just after the
    # pipeline run and use the mean, so both sides of the ratio see the same conditions
    before = model_only(15) if args.model_only else None
    t0 = time.perf_counter()
    res = segment_raster(args.raster, expr, str(out), opts, segmenter=seg)
    wall = time.perf_counter() - t0
    result = {"wall_s": wall, "tiles": res["tiles"], "model_tiles": res["model_tiles"],
              "peak_rss_mb": peak_rss_mb(), "model": model_name}
    if args.model_only:
        after = model_only(15)
        result["model_s_per_tile"] = (before + after) / 2
        result["model_s_per_tile_before_after"] = [before, after]
    print("RESULT " + json.dumps(result))


def _run_child(raster: Path, args: argparse.Namespace, model_only: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--raster", str(raster), "--workdir",
           args.workdir, "--tile-size", str(args.tile_size), "--overlap", str(args.overlap),
           "--batch-size", str(args.batch_size)] + (["--model-only"] if model_only else [])
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raster")
    p.add_argument("--model-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None)
    p.add_argument("--tile-size", type=int, default=192)
    p.add_argument("--overlap", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--skip-16k", action="store_true", help="only measure (a)")
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
    print(f"cpu cores: {os.cpu_count()}, tile {args.tile_size}, overlap {args.overlap}, "
          f"batch {args.batch_size}", flush=True)
    r4k = _run_child(_scene(4096, args.workdir), args, model_only=True)
    ratio_a = r4k["wall_s"] / (r4k["model_tiles"] * r4k["model_s_per_tile"])
    print(f"model: {r4k['model']}")
    print(f"(a) 4096² scene: {r4k['tiles']} tiles ({r4k['model_tiles']} through the model), "
          f"pipeline {r4k['wall_s']:.1f} s, model-only {r4k['model_s_per_tile'] * 1000:.1f} ms/tile"
          f" (before/after: {'/'.join(f'{x * 1000:.1f}' for x in r4k['model_s_per_tile_before_after'])})"
          f" → wall ÷ (tiles × forward) = {ratio_a:.3f}  (goal ≤ 1.15)", flush=True)
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
