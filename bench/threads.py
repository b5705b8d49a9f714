"""``segment --threads``: tile time with 1 vs 2 torch threads, OpenMP waiting actively or passively.

Runs ``rrsis-geo segment`` on a 1024² px region of the demo scene (demo model, CPU,
no class check) as separate processes, the four configurations alternated in each round so that
the machine's load drifts over all of them alike, and prints the tile-stage seconds of every run
(from ``--progress jsonl``) and the median per configuration.

    python bench/threads.py [--rounds 3]

``OMP_WAIT_POLICY=ACTIVE`` is OpenMP's spinning wait (the behaviour without the CLI's default);
``PASSIVE`` is what ``rrsis-geo`` sets unless the variable is already set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "sample_data" / "demo_scene.tif"
ROI = "579990,5046134,580246,5046390"  # the top-left 1024 x 1024 px of the demo scene
CONFIGS = [(1, "ACTIVE"), (2, "ACTIVE"), (2, "PASSIVE"), (1, "PASSIVE")]


def one_run(threads: int, policy: str, work: Path) -> tuple[float, int]:
    out = work / "o.gpkg"
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "rrsis_geo.cli.main", "segment", str(SCENE),
                        "-e", "the building", "-o", str(out), "--roi", ROI, "--no-class-check",
                        "--threads", str(threads), "--device", "cpu", "--progress", "jsonl"],
                       capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"segment failed ({r.returncode}): {r.stderr[-500:]}")
    out.unlink()
    events = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    tiles = max(e.get("total", 0) for e in events if e.get("stage") == "tiles")
    return float(events[-1]["timings"]["tiles"]), int(tiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    times: dict[tuple[int, str], list[float]] = {c: [] for c in CONFIGS}
    n_tiles = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for threads, policy in CONFIGS:
                t, n_tiles = one_run(threads, policy, Path(tmp))
                times[(threads, policy)].append(t)
                load = open("/proc/loadavg").read().split()[0] if os.path.exists(
                    "/proc/loadavg") else "?"
                print(f"round {rnd + 1}: threads {threads} {policy:7s} tiles {t:6.2f} s "
                      f"(load {load})", flush=True)
    print(f"\n{n_tiles} tiles, {os.cpu_count()} cores; median tile-stage seconds over "
          f"{args.rounds} rounds:")
    for (threads, policy), ts in times.items():
        med = statistics.median(ts)
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(f"  --threads {threads}  OMP_WAIT_POLICY={policy:7s} {med:6.2f} s"
              f"  ({med / n_tiles:.3f} s/tile; runs {runs})")


if __name__ == "__main__":
    main()
