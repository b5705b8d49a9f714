"""GPU throughput (issue: CPU and GPU inference that use the hardware). Prints, measured in one
run on a CUDA GPU:

* tiles/s of the model alone (back-to-back forwards of a batch, text pre-encoded),
* tiles/s of the whole pipeline (tiles ÷ wall time of ``segment`` on a 4096² scene: reading,
  pinned non-blocking copies, blending, the global pass, the class check and writing included),
* the pipeline ratio: wall time ÷ (images × model-only forward time per tile), images = tiles +
  the class check's windows in tile-equivalents (as bench/pipeline.py (a); goal ≤ 1.15),

with ``--batch-size auto`` (tiles per forward from the GPU's free memory) and ``--precision
auto`` (bf16 autocast on bf16-capable GPUs) unless given. Without a CUDA GPU it prints why and
exits with status 2, measuring nothing (``--device cpu`` runs it on the CPU). Usage::

    python bench/gpu.py [--size 4096] [--repeats 3] [--batch-size auto] [--precision auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    p.add_argument("--repeats", type=int, default=3, help="pipeline runs (median ratio)")
    p.add_argument("--batch-size", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cuda",
                   help="cuda or cuda:N; cpu runs the same measurements on the CPU (to check "
                   "this script where no GPU is)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
              "nothing measured. Run it where a GPU is present; bench/pipeline.py measures "
              "the CPU.", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pipeline as bp  # bench/pipeline.py: the same child runner and scene generator

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rrsis-gpu-bench-")
        args.workdir = tmp.name
    ns = argparse.Namespace(workdir=args.workdir, batch_size=args.batch_size, config="demo",
                            threads=0, precision=args.precision, device=args.device,
                            check_budget="auto", model_only_reps=15, repeats=args.repeats,
                            tile_size=None, overlap=None)
    name = "CPU" if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"device {name}, {args.size}² scene, batch size "
          f"{args.batch_size}, precision {args.precision}", flush=True)
    r = bp._run_child(bp._scene(args.size, args.workdir), ns, model_only=True)
    runs = sorted(r["run_ratios"])
    model_tps = 1.0 / min(r["model_s_per_tile_all"])
    pipe_tps = [r["tiles"] / w for w in r["walls_s"]]
    print(f"model: {r['model']} on {r['device']}, batch size {r['batch_size']}")
    print(f"model alone: {model_tps:.1f} tiles/s (best of {len(r['model_s_per_tile_all'])} "
          f"timings)")
    print(f"pipeline: {r['tiles']} tiles ({r['model_tiles']} through the model) + "
          f"{r['check_windows']:.1f} tile-equivalents of class-check windows; "
          f"{max(pipe_tps):.1f} tiles/s end to end (best of {len(pipe_tps)} runs: "
          f"{', '.join(f'{w:.1f}' for w in r['walls_s'])} s)")
    print(f"pipeline ratio wall ÷ (images × forward): {bp._median(runs):.3f} median (range "
          f"{runs[0]:.3f}-{runs[-1]:.3f}) (goal ≤ 1.15)")
    bp._print_splits(f"{args.size}² scene", r, 0.3)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
