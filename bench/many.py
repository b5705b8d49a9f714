"""Benchmark: ``segment-many`` on a 2-worker LocalCluster vs. ``segment`` run serially.

Writes 8 scenes (default 512x512 px, 0.5 m, red "buildings" on a textured ground), then times

* serial: one process, the model loaded once, ``segment_raster`` on each scene in turn (torch may
  use every core; cold = first pass with imports and model load, warm = a second pass, and a
  third pass with one torch thread, because on a busy machine multi-threaded torch can be much
  slower than one thread);
* many (cold): ``segment_many(workers=2)`` as a user runs it: cluster start, worker imports and
  model loads included;
* many (warm): a second ``segment_many`` on an already started, already loaded 2-worker cluster
  (what a long-lived ``--scheduler`` cluster gives).

and prints ``serial / many`` for both. The model: the shipped demo weights when
``sample_data/demo_model/fianet_tiny.safetensors`` exists, else a randomly initialized
FIANet-tiny (same architecture and compute as the demo model, meaningless masks), else
(``--model standin``) the red-pixel stand-in.

    .venv/bin/python bench/many.py [--scenes 8] [--size 768] [--model auto|demo|tiny|standin]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    args = ap.parse_args()

    from distributed import Client

    from rrsis_geo.inference.many import local_cluster, segment_many
    from rrsis_geo.inference.pipeline import SegmentOptions, Segmenter, segment_raster

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

        # serial: what a shell loop over `segment` gives, minus the per-call process start.
        # cold = first pass (imports, model load); warm = the same scenes again, model loaded.
        def serial_pass(seg, name: str) -> int:
            (tmp / name).mkdir()
            tiles = 0
            for p in inputs:
                r = segment_raster(p, expr, tmp / name / (Path(p).stem + ".gpkg"), opts,
                                   segmenter=seg)
                tiles += r["tiles"]
            return tiles

        t0 = time.perf_counter()
        seg = Segmenter(weights, device="cpu", model=factory() if factory else None)
        n_tiles = serial_pass(seg, "serial_cold")
        t_serial_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        serial_pass(seg, "serial_warm")
        t_serial = time.perf_counter() - t0
        # the same with one torch thread: on a busy machine torch's multi-threaded kernels can be
        # far slower than one thread, which a fair reading of the ratio must know
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        serial_pass(seg, "serial_warm_1thread")
        t_serial_1 = time.perf_counter() - t0
        torch.set_num_threads(torch_threads)

        # many, cold: cluster start + worker imports + model loads included
        t0 = time.perf_counter()
        res_cold = segment_many(inputs, expr, tmp / "cold", opts, weights=weights, device="cpu",
                                workers=args.workers, model_factory=factory)
        t_cold = time.perf_counter() - t0

        # many, warm: same work on a started cluster whose workers already hold the model
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        with local_cluster(args.workers, 1) as lc, Client(lc) as client:
            segment_many(inputs[: args.workers * 2], expr, tmp / "warmup", opts, weights=weights,
                         device="cpu", client=client, model_factory=factory,
                         torch_threads=threads)
            t0 = time.perf_counter()
            res_warm = segment_many(inputs, expr, tmp / "warm", opts, weights=weights,
                                    device="cpu", client=client, model_factory=factory,
                                    torch_threads=threads)
            t_warm = time.perf_counter() - t0
        assert not res_cold["failed"] and not res_warm["failed"], (res_cold, res_warm)
        report = {
            "model": kind, "scenes": args.scenes, "size_px": args.size, "tiles": n_tiles,
            "cpu_count": os.cpu_count(), "workers": args.workers,
            "torch_threads_serial": torch_threads, "torch_threads_per_worker": threads,
            "serial_cold_s": round(t_serial_cold, 2), "many_cold_s": round(t_cold, 2),
            "serial_warm_s": round(t_serial, 2), "serial_warm_1thread_s": round(t_serial_1, 2),
            "many_warm_s": round(t_warm, 2),
            "serial_over_many_cold": round(t_serial_cold / t_cold, 2),
            "serial_over_many_warm": round(t_serial / t_warm, 2),
            "serial_1thread_over_many_warm": round(t_serial_1 / t_warm, 2),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(report))
        print(f"{args.scenes} scenes of {args.size}² px, {kind} model: serial/segment-many "
              f"({args.workers} workers) = {t_serial_cold:.1f}/{t_cold:.1f} s = "
              f"x{t_serial_cold / t_cold:.2f} cold (imports, cluster start, model loads "
              f"included); {t_serial:.1f}/{t_warm:.1f} s = x{t_serial / t_warm:.2f} warm "
              f"(serial with 1 torch thread: {t_serial_1:.1f} s = x{t_serial_1 / t_warm:.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
