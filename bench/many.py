"""Benchmark: ``segment-many`` on a 2-worker LocalCluster vs. ``segment`` run serially.

Writes 8 scenes (default 512x512 px, 0.5 m, red "buildings" on a textured ground), then times

* serial: one process, the model loaded once, ``segment_raster`` on each scene in turn (torch may
  use every core; cold = first pass with imports and model load, warm = later passes, also with
  one torch thread, because on a busy machine multi-threaded torch can be much slower than one);
* many (cold): ``segment_many(workers=2)`` as a user runs it: cluster start, worker imports and
  model loads included;
* many (warm): ``segment_many`` on an already started, already loaded 2-worker cluster (what a
  long-lived ``--scheduler`` cluster gives), in rounds interleaved with the warm serial passes so
  that other load on a shared machine hits both alike (medians reported).

and prints ``serial / many`` for both. The model: the shipped demo weights when
``sample_data/demo_model/fianet_tiny.safetensors`` exists, else a randomly initialized
FIANet-tiny (same architecture and compute as the demo model, meaningless masks), else
(``--model standin``) the red-pixel stand-in.

    .venv/bin/python bench/many.py [--scenes 8] [--size 512] [--rounds 3] [--model auto|demo|tiny|standin]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.standin, when the stand-in is asked for

DEMO = REPO / "sample_data" / "demo_model" / "fianet_tiny.safetensors"


def make_tiny_fianet():
    """Random FIANet-tiny (seeded), for timing only: it finds nothing meaningful."""
    import torch

    from rrsis_geo.model.fianet import FIANet, FIANetConfig

    torch.manual_seed(0)
    cfg = FIANetConfig.tiny()
    cfg.meta.update({"input_size": 192, "classes": "refsegrs", "max_tokens": 20})
    return FIANet(cfg).eval()


def make_standin():
    from tests.standin import RedSegmenter

    return RedSegmenter(input_size=192)


def write_scenes(folder: Path, n: int, size: int) -> list[str]:
    import rasterio
    from rasterio.transform import from_origin

    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        arr = np.empty((3, size, size), np.uint8)
        for b, v in enumerate((95, 110, 80)):
            arr[b] = np.clip(v + rng.normal(0, 12, (size, size)), 0, 255)
        for _ in range(12):
            r, c = rng.integers(0, size - 40, 2)
            h, w = rng.integers(10, 40, 2)
            arr[:, r:r + h, c:c + w] = np.array([230, 30, 25], np.uint8)[:, None, None]
        p = folder / f"scene_{i:02d}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=3,
                           dtype="uint8", crs="EPSG:32633", tiled=True, blockxsize=256,
                           blockysize=256,
                           transform=from_origin(500_000.0 + i * size, 5e6, 0.5, 0.5)) as dst:
            dst.write(arr)
        paths.append(str(p))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="scene width = height in pixels")
    ap.add_argument("--model", choices=["auto", "demo", "tiny", "standin"], default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="warm rounds (medians reported)")
    args = ap.parse_args()

    from distributed import Client

    from rrsis_geo.inference.many import local_cluster, segment_many
    from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
    from rrsis_geo.inference.segmenter import Segmenter

    kind = args.model
    if kind == "auto":
        kind = "demo" if DEMO.exists() else "tiny"
    factory = {"demo": None, "tiny": make_tiny_fianet, "standin": make_standin}[kind]
    weights = str(DEMO) if kind == "demo" else None
    expr = "the red building"
    opts = SegmentOptions(gsd="native", mode="all")

    tmp = Path(tempfile.mkdtemp(prefix="rrsis-bench-many-"))
    try:
        (tmp / "in").mkdir()
        inputs = write_scenes(tmp / "in", args.scenes, args.size)

        # serial: what a shell loop over `segment` gives, minus the per-call process start
        def serial_pass(seg, name: str) -> int:
            (tmp / name).mkdir()
            tiles = 0
            for p in inputs:
                r = segment_raster(p, expr, tmp / name / (Path(p).stem + ".gpkg"), opts,
                                   segmenter=seg)
                tiles += r["tiles"]
            return tiles

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        import torch

        torch_threads = torch.get_num_threads()
        threads = max(1, (os.cpu_count() or 1) // args.workers)

        # cold: first pass of each, imports, model load (and cluster start) included
        seg = None
        n_tiles = 0

        def serial_cold() -> None:
            nonlocal seg, n_tiles
            seg = Segmenter(weights, device="cpu", model=factory() if factory else None)
            n_tiles = serial_pass(seg, "serial_cold")

        t_serial_cold = timed(serial_cold)
        res_cold: dict = {}

        def many_cold() -> None:
            res_cold.update(segment_many(inputs, expr, tmp / "cold", opts, weights=weights,
                                         device="cpu", workers=args.workers,
                                         model_factory=factory))

        t_cold = timed(many_cold)
        assert not res_cold["failed"], res_cold

        # warm: model loaded, cluster started. Rounds interleave the three ways so that load
        # from other processes on a shared machine hits them alike; medians are reported.
        # The 1-thread serial pass is there because on a busy machine torch's multi-threaded
        # kernels can be far slower than one thread.
        t_ser, t_ser1, t_warm = [], [], []
        with local_cluster(args.workers, 1) as lc, Client(lc) as client:
            segment_many(inputs[: args.workers * 2], expr, tmp / "warmup", opts, weights=weights,
                         device="cpu", client=client, model_factory=factory,
                         torch_threads=threads)
            for r in range(args.rounds):
                torch.set_num_threads(torch_threads)
                t_ser.append(timed(lambda: serial_pass(seg, f"serial_{r}")))
                torch.set_num_threads(1)
                t_ser1.append(timed(lambda: serial_pass(seg, f"serial1_{r}")))
                res = {}
                t_warm.append(timed(lambda: res.update(segment_many(
                    inputs, expr, tmp / f"warm_{r}", opts, weights=weights, device="cpu",
                    client=client, model_factory=factory, torch_threads=threads))))
                assert not res["failed"], res
        t_serial, t_serial_1, t_many = (statistics.median(v) for v in (t_ser, t_ser1, t_warm))
        report = {
            "model": kind, "scenes": args.scenes, "size_px": args.size, "tiles": n_tiles,
            "cpu_count": os.cpu_count(), "workers": args.workers,
            "torch_threads_serial": torch_threads, "torch_threads_per_worker": threads,
            "serial_cold_s": round(t_serial_cold, 2), "many_cold_s": round(t_cold, 2),
            "serial_warm_s": [round(v, 2) for v in t_ser],
            "serial_warm_1thread_s": [round(v, 2) for v in t_ser1],
            "many_warm_s": [round(v, 2) for v in t_warm],
            "serial_over_many_cold": round(t_serial_cold / t_cold, 2),
            "serial_over_many_warm": round(t_serial / t_many, 2),
            "serial_1thread_over_many_warm": round(t_serial_1 / t_many, 2),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(report))
        print(f"{args.scenes} scenes of {args.size}² px, {kind} model, {os.cpu_count()} cores: "
              f"serial/segment-many ({args.workers} workers) cold {t_serial_cold:.1f}/{t_cold:.1f}"
              f" s = x{t_serial_cold / t_cold:.2f} (imports, cluster start, model loads "
              f"included); warm (median of {args.rounds}) {t_serial:.1f}/{t_many:.1f} s = "
              f"x{t_serial / t_many:.2f}; serial with 1 torch thread {t_serial_1:.1f} s = "
              f"x{t_serial_1 / t_many:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
