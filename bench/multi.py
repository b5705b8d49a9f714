"""Several sentences in one run vs one run per sentence (shared raster reads).

Generates a scene with ``rrsis-geo synth scene`` (default 1024², seed 0), takes its first
``--sentences`` present target expressions, and times with the shipped demo model (one model
load for all runs, a warm-up run first):

* separately: one ``segment_raster`` per sentence (what ``-e`` once per command gives);
* together: one ``segment_raster`` with all the sentences (``-e`` repeated): each tile is read
  and normalized once and goes through FIANet with every sentence at once (its text-free stage
  once per tile).

The two are run alternately ``--repeats`` times (this machine's speed drifts); printed: each
pair, the medians, their ratio, the tile reads, the seconds of the tile forwards and of the
class check (per sentence either way), and
the largest score / polygon difference between the two ways (the same objects are expected).
Usage::

    python bench/multi.py [--size 1024] [--sentences 3] [--repeats 3] [--threads 1]
                          [--no-class-check]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--sentences", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-class-check", action="store_true",
                   help="leave the class check out (it runs per sentence either way)")
    args = p.parse_args()

    import pyogrio
    import torch

    from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
    from rrsis_geo.inference.segmenter import Segmenter

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-multi-") as tmp:
        tmp = Path(tmp)
        scene = tmp / "scene.tif"
        subprocess.run([sys.executable, "-m", "rrsis_geo.cli.main", "synth", "scene", str(scene),
                        "--size", str(args.size), "--seed", str(args.seed)], check=True,
                       capture_output=True, cwd=ROOT)
        targets = pyogrio.read_dataframe(f"{scene}.targets.gpkg")
        sentences = [str(e) for e in targets[~targets["absent"].astype(bool)]["expression"]]
        sentences = sentences[: args.sentences]
        seg = Segmenter(None, device=args.device)
        def opts():  # the defaults of `rrsis-geo segment`, as a user runs it
            return SegmentOptions(class_check=not args.no_class_check)

        def run(expr, name):
            out = tmp / f"{name}.gpkg"
            t0 = time.perf_counter()
            res = segment_raster(str(scene), expr, str(out), opts(), segmenter=seg)
            return time.perf_counter() - t0, res, pyogrio.read_dataframe(out)

        print(f"scene {args.size}² (synth seed {args.seed}), {len(sentences)} sentences, "
              f"{args.device}, {args.threads} thread(s), demo model"
              f"{', no class check' if args.no_class_check else ''}:")
        for s in sentences:
            print(f"  - {s}")
        run(sentences[0], "warmup")
        sep_t, tog_t = [], []
        for r in range(args.repeats):
            t_sep, reads_sep, model_sep, check_sep, frames = 0.0, 0, 0.0, 0.0, []
            for i, s in enumerate(sentences):
                dt, res, df = run(s, f"one{i}")
                t_sep += dt
                reads_sep += res["tile_reads"]
                model_sep += res["model_seconds"]
                check_sep += res["check_seconds"]
                frames.append(df)
            t_tog, res, both = run(sentences, "both")
            sep_t.append(t_sep)
            tog_t.append(t_tog)
            print(f"run {r + 1}: separately {t_sep:.2f} s ({reads_sep} tile reads, tile forwards "
                  f"{model_sep:.2f} s, class check {check_sep:.2f} s), together {t_tog:.2f} s "
                  f"({res['tile_reads']} tile reads, tile forwards {res['model_seconds']:.2f} s, "
                  f"class check {res['check_seconds']:.2f} s)")
        import pandas as pd

        one = pd.concat(frames, ignore_index=True)
        same = len(one) == len(both) and list(one["expression"]) == list(both["expression"])
        dscore = max((abs(a - b) for a, b in zip(one["score"], both["score"])), default=0.0)
        dgeom = max((a.symmetric_difference(b).area / max(a.area, 1e-9)
                     for a, b in zip(one.geometry, both.geometry)), default=0.0)
        ms, mt = statistics.median(sep_t), statistics.median(tog_t)
        print(f"median: separately {ms:.2f} s, together {mt:.2f} s, together/separately "
              f"{mt / ms:.3f}")
        print(f"objects: {len(one)} separately, {len(both)} together, same sentences and order: "
              f"{same}; largest score difference {dscore:.2e}, largest polygon difference "
              f"{dgeom:.2e} of its area")


if __name__ == "__main__":
    main()
