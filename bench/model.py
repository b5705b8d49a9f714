"""CPU benchmark of FIANet: time per 480² tile, peak memory, fp32 vs bf16 autocast vs int8.

Usage::

    python bench/model.py                      # official layout (num_tmem=3) and the tiny layout
    python bench/model.py --layouts tiny --reps 5 --size 480
    python bench/model.py --weights model.pth  # real weights instead of random ones

Each layout runs in its own subprocess so that its peak RSS is its own. Batch 1, CPU, threads =
torch's default unless ``--threads``. Wall times suffer when other processes share the CPU; the
CPU-time column (process time) is the more stable figure for comparisons. With random weights the decoder's last layer is rescaled so
that logits spread over a few units (otherwise all logits sit near 0 and the bf16/fp32 argmax
agreement would measure noise); the timing is unaffected.

Paths: fp32 (eager), bf16 autocast, int8 (dynamic quantization of the Linear layers,
``--precision int8``). ``--upstream-s S``: upstream's own fp32 time per 480² tile measured on the
same machine (its code is not in this repository: it has no licence), to print each path's
time ÷ upstream fp32 next to ours. ``--compile`` also times ``segment --compile``'s path (bf16),
each repetition alternated with eager bf16 and eager fp32: its ratios to those are medians of
the per-repetition ratios, measured in the same minutes (the CPU's speed drifts by ±15 % over
minutes, so ratios of times taken minutes apart mislead).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def _inputs(size: int, max_tokens: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, size, size, generator=g)
    ids = torch.randint(1000, 8000, (1, max_tokens), generator=g)
    ids[0, 0] = 101
    attn = torch.zeros(1, max_tokens)
    attn[0, :10] = 1
    obj = torch.zeros(1, max_tokens)
    obj[0, 2:4] = 1   # two object words: the object branch is computed
    pos = torch.zeros(1, max_tokens)
    pos[0, 4:7] = 1
    return image, ids, attn, obj, pos


def _timed(fn, reps: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_min_s": min(walls), "wall_median_s": statistics.median(walls),
            "cpu_min_s": min(cpus)}


def _auto_picks_bf16(model) -> bool:
    """Whether ``--precision auto`` runs this model in bf16 on this CPU (before its first-batch
    agreement check; rrsis_geo.inference.device.auto_cpu_bf16)."""
    from rrsis_geo.inference.device import auto_cpu_bf16

    return auto_cpu_bf16(model)


def run_one(layout: str, size: int, reps: int, weights: str | None,
            compile_bf16: bool = False) -> dict:
    """Benchmark one layout in this process; returns a JSON-ready dict."""
    from rrsis_geo.model import FIANet, FIANetConfig, load_fianet

    torch.manual_seed(0)
    t0 = time.perf_counter()
    if weights:
        model = load_fianet(weights)
    else:
        config = FIANetConfig.official(3) if layout == "official" else FIANetConfig.tiny()
        model = FIANet(config).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_var.uniform_(0.5, 2.0)
            model.classifier.conv1_1.weight.mul_(100.0)
    build_s = time.perf_counter() - t0
    max_tokens = int(model.meta.get("max_tokens", 22))
    image, ids, attn, obj, pos = _inputs(size, max_tokens)
    from rrsis_geo.model.ops import quantize_linears

    qmodel = quantize_linears(model)
    with torch.inference_mode():
        text = model.encode_text(ids, attn, obj, pos)
        ref = model.segment_image(image, text)           # warm-up
        fp32 = _timed(lambda: model(image, ids, attn, obj, pos), reps)
        seg = _timed(lambda: model.segment_image(image, text), reps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.segment_image(image, text)        # warm-up
            bf16 = _timed(lambda: model.segment_image(image, text), reps)
        qtext = qmodel.encode_text(ids, attn, obj, pos)
        q8 = qmodel.segment_image(image, qtext)           # warm-up
        int8 = _timed(lambda: qmodel.segment_image(image, qtext), reps)
        compiled = {}
        if compile_bf16:  # segment --compile's call, in bf16 (what auto picks for this layout)
            from rrsis_geo.inference.segmenter import compiled_segment_image

            fn = compiled_segment_image(model, torch.device("cpu"), torch.bfloat16)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                t0 = time.perf_counter()
                low_c = fn(image, text)                   # compiles
                compile_s = time.perf_counter() - t0
                comp_t, eager_t, fp32_t = [], [], []
                for _ in range(reps):  # alternated with eager bf16 and eager fp32
                    eager_t.append(_timed(lambda: model.segment_image(image, text), 1))
                    comp_t.append(_timed(lambda: fn(image, text), 1))
                    with torch.autocast("cpu", enabled=False):
                        fp32_t.append(_timed(lambda: model.segment_image(image, text), 1))
            compiled = {"compile_s": round(compile_s, 1),
                        "segment_image_bf16_compiled": {
                            "wall_min_s": min(x["wall_min_s"] for x in comp_t),
                            "wall_median_s": statistics.median(x["wall_min_s"] for x in comp_t),
                            "cpu_min_s": min(x["cpu_min_s"] for x in comp_t)},
                        "ratio_to_eager_bf16": statistics.median(
                            a["wall_min_s"] / b["wall_min_s"] for a, b in zip(comp_t, eager_t)),
                        "ratio_to_fp32": statistics.median(
                            a["wall_min_s"] / b["wall_min_s"] for a, b in zip(comp_t, fp32_t)),
                        "agreement": (low_c.float().argmax(1) == ref.argmax(1)).float()
                        .mean().item()}
    agree = (low.float().argmax(1) == ref.argmax(1)).float().mean().item()
    agree8 = (q8.argmax(1) == ref.argmax(1)).float().mean().item()
    return {
        "layout": layout if not weights else f"weights:{weights}",
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "size": size,
        "build_or_load_s": round(build_s, 2),
        "forward_fp32": fp32,
        "segment_image_fp32": seg,
        "segment_image_bf16_autocast": bf16,
        "bf16_vs_fp32_argmax_agreement": agree,
        "segment_image_int8": int8,
        "int8_vs_fp32_argmax_agreement": agree8,
        "logit_abs_max": ref.abs().max().item(),
        "auto_picks_bf16": _auto_picks_bf16(model),
        **compiled,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_chips(chips: str, weights: str | None, pairs: int, batch: int,
              compile_bf16: bool = False) -> dict:
    """The demo model (or ``weights``) on referring chips (``rrsis-geo synth chips`` layout):
    each CPU precision path's seconds per chip (fp32 and the other path alternated in pairs,
    in one process), its pixel argmax agreement with fp32 and its mIoU against the masks."""
    import json as _json
    from pathlib import Path

    import numpy as np
    import rasterio

    from rrsis_geo.inference.segmenter import Segmenter

    root = Path(chips)
    rows = [_json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines() if x]
    seg = Segmenter(weights, device="cpu", precision="fp32")
    imgs, masks, texts = [], [], []
    for r in rows:
        with rasterio.open(root / r["image"]) as src:
            imgs.append(src.read().astype(np.float32) / 255.0)
        with rasterio.open(root / r["mask"]) as src:
            masks.append(src.read(1) > 0)
        texts.append(r["expression"])
    imgs = np.stack(imgs)
    feats = [seg.encode(t) for t in texts]

    from rrsis_geo.model.ops import quantize_linears

    models = {"fp32": seg.model, "int8": quantize_linears(seg.model)}

    def predict(path):
        seg.model = models["int8" if path == "int8" else "fp32"]
        seg.autocast_dtype = path if isinstance(path, torch.dtype) else None
        seg.compile = path == "bf16 compiled"  # segment --compile (compiled at its first use)
        if seg.compile:
            seg.autocast_dtype = torch.bfloat16
        out = []
        t0 = time.perf_counter()
        for i in range(0, len(imgs), batch):  # one sentence per chip: batch of copies of it
            for j in range(i, min(i + batch, len(imgs))):
                out.append(seg.predict(imgs[j:j + 1], feats[j])[0] >= 0.5)
        return np.stack(out), (time.perf_counter() - t0) / len(imgs)

    def miou(pred):
        ious = []
        for p, m in zip(pred, masks):
            union = (p | m).sum()
            ious.append((p & m).sum() / union if union else 1.0)
        return float(np.mean(ious))

    paths = {"bf16": torch.bfloat16, "int8": "int8"}
    if compile_bf16:
        paths["bf16 compiled"] = "bf16 compiled"
    ref, _ = predict(None)  # warm-up
    res = {"chips": len(imgs), "threads": torch.get_num_threads(),
           "fp32": {"miou": miou(ref), "s_per_chip": []}}
    for name, dtype in paths.items():
        predict(dtype)  # warm-up
        res[name] = {"s_per_chip": []}
        for _ in range(pairs):
            ref, t32 = predict(None)
            low, tlow = predict(dtype)
            res["fp32"]["s_per_chip"].append(t32)
            res[name]["s_per_chip"].append(tlow)
        res[name]["agreement"] = float((low == ref).mean())
        res[name]["miou"] = miou(low)
        res[name]["ratio_to_fp32"] = [b / a for a, b in zip(res["fp32"]["s_per_chip"][-pairs:],
                                                             res[name]["s_per_chip"])]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", nargs="+", default=["official", "tiny"],
                    choices=["official", "tiny", "none"])
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--weights", help="benchmark a weights file instead of random layouts")
    ap.add_argument("--plain-linear", action="store_true",
                    help="disable the fused oneDNN linear path (rrsis_geo.model.ops)")
    ap.add_argument("--chips", help="also measure the demo model (or --weights) on these "
                    "referring chips (rrsis-geo synth chips --seed 33 --split test OUT): each "
                    "precision path's time, argmax agreement with fp32 and mIoU")
    ap.add_argument("--pairs", type=int, default=3, help="--chips: fp32/other timing pairs")
    ap.add_argument("--upstream-s", type=float, default=None,
                    help="upstream's fp32 seconds per tile on this machine (same --size and "
                    "--threads): each path's time is also printed ÷ it")
    ap.add_argument("--compile", action="store_true",
                    help="also time segment --compile's path in bf16 (compiles first: minutes "
                    "the first time, cached on disk afterwards)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one layout, JSON to stdout
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plain_linear:
        from rrsis_geo.model import ops
        ops.USE_ONEDNN_LINEAR = False
    if args.one:
        print(json.dumps(run_one(args.one, args.size, args.reps, args.weights, args.compile)))
        return
    if args.chips:
        r = run_chips(args.chips, args.weights, args.pairs, 1, args.compile)
        print(f"chips: {r['chips']} (demo model unless --weights), {r['threads']} threads, "
              f"batch 1; fp32 {min(r['fp32']['s_per_chip']) * 1000:.0f} ms/chip (min), "
              f"mIoU {r['fp32']['miou']:.4f}")
        for name in ("bf16", "int8", "bf16 compiled"):
            if name not in r:
                continue
            x = r[name]
            ratios = sorted(x["ratio_to_fp32"])
            print(f"  {name}: {min(x['s_per_chip']) * 1000:.0f} ms/chip (min); time ÷ fp32 in "
                  f"{len(ratios)} alternated pairs: median {ratios[len(ratios) // 2]:.3f} (range "
                  f"{ratios[0]:.3f}-{ratios[-1]:.3f}); argmax agreement with fp32 "
                  f"{x['agreement']:.4f}; mIoU {x['miou']:.4f} (fp32 {r['fp32']['miou']:.4f})")
        if args.layouts == ["none"]:
            return
    layouts = ["weights"] if args.weights else args.layouts
    for layout in layouts:
        cmd = [sys.executable, __file__, "--one", layout, "--size", str(args.size),
               "--reps", str(args.reps), "--threads", str(args.threads)]
        if args.weights:
            cmd += ["--weights", args.weights]
        if args.plain_linear:
            cmd.append("--plain-linear")
        if args.compile:
            cmd.append("--compile")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        f, s, b = r["forward_fp32"], r["segment_image_fp32"], r["segment_image_bf16_autocast"]
        print(f"{r['layout']}: {r['params'] / 1e6:.1f} M params, {r['size']}² tile, batch 1, "
              f"{r['threads']} threads")
        print(f"  fp32 forward (text + image): {f['wall_min_s']:.3f} s min, "
              f"{f['wall_median_s']:.3f} s median (cpu {f['cpu_min_s']:.2f} s)")
        print(f"  fp32 segment_image (text reused): {s['wall_min_s']:.3f} s min, "
              f"{s['wall_median_s']:.3f} s median (cpu {s['cpu_min_s']:.2f} s)")
        print(f"  bf16 autocast segment_image: {b['wall_min_s']:.3f} s min, "
              f"{b['wall_median_s']:.3f} s median (cpu {b['cpu_min_s']:.2f} s); "
              f"argmax agreement with fp32 "
              f"{r['bf16_vs_fp32_argmax_agreement']:.4f} (|logit| max {r['logit_abs_max']:.1f})")
        q = r["segment_image_int8"]
        print(f"  int8 dynamic quantization segment_image: {q['wall_min_s']:.3f} s min, "
              f"{q['wall_median_s']:.3f} s median (cpu {q['cpu_min_s']:.2f} s); argmax "
              f"agreement with fp32 {r['int8_vs_fp32_argmax_agreement']:.4f}")
        print("  --precision auto on this CPU: " + ("bf16 (kept if the first batch agrees "
              "with fp32 on >= 99 % of the pixels)" if r["auto_picks_bf16"] else "fp32"))
        paths = [("fp32", s), ("bf16", b), ("int8", q)]
        if "segment_image_bf16_compiled" in r:
            c = r["segment_image_bf16_compiled"]
            paths.append(("bf16 compiled", c))
            print(f"  bf16 compiled (segment --compile): {c['wall_min_s']:.3f} s min, "
                  f"{c['wall_median_s']:.3f} s median (cpu {c['cpu_min_s']:.2f} s); "
                  f"÷ eager bf16 {r['ratio_to_eager_bf16']:.3f}, ÷ eager fp32 "
                  f"{r['ratio_to_fp32']:.3f} (medians of runs alternated in the same minutes: "
                  f"compare these, the machine's speed drifts); argmax agreement with fp32 "
                  f"{r['agreement']:.4f}; compiling took {r['compile_s']} s")
        if args.upstream_s:
            print("  ÷ upstream fp32 (" + f"{args.upstream_s:.3f} s): " + ", ".join(
                f"{name} {x['wall_min_s'] / args.upstream_s:.2f}×" for name, x in paths))
        print(f"  peak RSS {r['peak_rss_mb']:.0f} MB; build/load {r['build_or_load_s']} s")


if __name__ == "__main__":
    main()
