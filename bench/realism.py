"""Real-imagery benchmark (issue: the shipped model sees real pixels). Prints, measured in one run,
for one or more models:

* **"the trees" on held-out real windows**: the held-out raster is cut into square windows of
  ``--window-m`` metres (36 m by default, about the size of a NEON plot image), and
  ``rrsis-geo segment RASTER -e "the trees" --mode all --roi WINDOW`` runs on each, as a user
  would run a small orthophoto. Scored against the crown boxes: *box recall* (a crown counts
  as found when >= 30 % of its box is covered by predicted polygons; crowns whose box centre
  lies in the window) and
  *pixel precision* (share of predicted pixels inside any crown box). Chance precision (the
  share of the area covered by boxes) is printed beside it.
* **held-out real chips** (``--dataset``): mIoU overall, per expression type and per class on the
  ``test`` split of a dataset made by ``rrsis-geo dataset build`` from held-out imagery.

Real data used by the model card: the NEON orthophoto of the ``deepforest`` wheel, made GIS-ready
and cut into a training (north) and a held-out (south) part by ``scripts/neon_crop2.py``::

    pip download --no-deps deepforest==2.1.0 -d wheels/
    python scripts/neon_crop2.py wheels/deepforest-2.1.0-py3-none-any.whl data/neon
    python bench/realism.py --raster data/neon/yell_crop2_south.tif \\
        --boxes data/neon/yell_crop2_south_boxes.csv --dataset data/neon_test \\
        --weights before.safetensors --weights after.safetensors
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

COVERED = 0.30  # a crown is found when this share of its box is covered


def chip_metrics(dataset: str, weights: str | None, threads: int) -> dict:
    """mIoU of the model on the dataset's test split, overall / per type / per class."""
    from rrsis_geo.train.evaluation import evaluate_weights

    report, per_sample = evaluate_weights(dataset, split="test", weights=weights,
                                          num_threads=threads)
    cats = Path(dataset) / "metadata.jsonl"
    by_id = {}
    if cats.is_file():
        for line in cats.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            by_id[str(rec.get("id"))] = rec
    per_class: dict[str, list[float]] = {}
    empty_ok: list[bool] = []
    present: list[float] = []
    for row in per_sample:
        rec = by_id.get(str(row.get("id")), {})
        if row.get("type") == "absent":  # IoU is 0 by definition: score "painted nothing"
            empty_ok.append(int(row.get("pred_pixels", 1)) == 0)
            continue
        present.append(float(row["iou"]))
        per_class.setdefault(rec.get("category") or "?", []).append(float(row["iou"]))
    return {
        "mIoU": float(np.mean(present)) if present else float("nan"),
        "count": len(present),
        "absent": len(empty_ok),
        "absent_empty": float(np.mean(empty_ok)) if empty_ok else float("nan"),
        "types": {k: v["mIoU"] for k, v in report.get("subsets", {}).items() if k != "absent"},
        "classes": {k: (float(np.mean(v)), len(v)) for k, v in sorted(per_class.items())},
    }


def read_boxes(path: str, src):
    """Crown boxes as polygons in the raster's CRS: a deepforest CSV of pixel boxes
    (image_path,xmin,ymin,xmax,ymax,label) on this raster, or any vector file."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    if str(path).lower().endswith(".csv"):
        df = pd.read_csv(path)
        t = src.transform
        geoms = [box(*(t * (r.xmin, r.ymax)), *(t * (r.xmax, r.ymin))) for r in df.itertuples()]
        return gpd.GeoDataFrame(df, geometry=geoms, crs=src.crs)
    return gpd.read_file(path).to_crs(src.crs)


def windows_of(src, window_m: float) -> list:
    """Non-overlapping square windows of ``window_m`` metres covering the raster (whole ones
    only), as shapely boxes in its CRS."""
    from shapely.geometry import box

    px = max(1, round(window_m / abs(src.transform.a)))
    out = []
    for r in range(0, src.height - px + 1, px):
        for c in range(0, src.width - px + 1, px):
            x0, y1 = src.transform * (c, r)
            x1, y0 = src.transform * (c + px, r + px)
            out.append(box(x0, y0, x1, y1))
    return out


def window_metrics(raster: str, boxes_path: str, window_m: float, segmenter, expression: str,
                   extra: dict) -> dict:
    """Box recall and pixel precision of ``segment --mode all --roi WINDOW`` over all windows
    (each window is run on its own, as a user would run a small orthophoto)."""
    import geopandas as gpd
    import rasterio
    from rasterio import features
    from rasterio.windows import from_bounds

    from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster

    found = total = 0
    pred_px = pred_in = box_px = area_px = 0
    seconds = 0.0
    with rasterio.open(raster) as src:
        crowns = read_boxes(boxes_path, src)
        windows = windows_of(src, window_m)
        for geom in windows:
            b = geom.bounds
            win = from_bounds(*b, transform=src.transform).round_offsets().round_lengths()
            tr = src.window_transform(win)
            shape = (int(win.height), int(win.width))
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "found.gpkg"
                opts = SegmentOptions(mode="all", roi=",".join(f"{v:.3f}" for v in b), **extra)
                t0 = time.perf_counter()
                segment_raster(raster, expression, out, opts=opts, segmenter=segmenter)
                seconds += time.perf_counter() - t0
                pred = gpd.read_file(out)
            pmask = np.zeros(shape, bool)
            if len(pred):
                pmask = features.rasterize(((g, 1) for g in pred.geometry), out_shape=shape,
                                           transform=tr, dtype="uint8").astype(bool)
            near = crowns[crowns.intersects(geom)]
            bmask = np.zeros(shape, bool)
            if len(near):
                bmask = features.rasterize(((g, 1) for g in near.geometry), out_shape=shape,
                                           transform=tr, dtype="uint8").astype(bool)
            for g in near.geometry:
                if not geom.contains(g.centroid):
                    continue
                one = features.rasterize([(g, 1)], out_shape=shape, transform=tr,
                                         dtype="uint8").astype(bool)
                total += 1
                if one.sum() and (one & pmask).sum() / one.sum() >= COVERED:
                    found += 1
            pred_px += int(pmask.sum())
            pred_in += int((pmask & bmask).sum())
            box_px += int(bmask.sum())
            area_px += pmask.size
    return {
        "windows": len(windows),
        "window_m": window_m,
        "crowns": total,
        "box_recall": found / total if total else float("nan"),
        "pixel_precision": pred_in / pred_px if pred_px else 0.0,
        "chance_precision": box_px / area_px if area_px else float("nan"),
        "predicted_share": pred_px / area_px if area_px else float("nan"),
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raster", required=True, help="held-out real orthophoto (GeoTIFF)")
    ap.add_argument("--boxes", required=True,
                    help="its crown boxes: deepforest CSV of pixel boxes, or any vector file")
    ap.add_argument("--dataset", default=None,
                    help="folder written by 'rrsis-geo dataset build' from held-out imagery: "
                         "its test split is scored chip by chip")
    ap.add_argument("--weights", action="append", default=None,
                    help="model(s) to compare (repeat); default: the shipped model")
    ap.add_argument("--expression", default="the trees")
    ap.add_argument("--window-m", type=float, default=36.0,
                    help="window side in metres (NEON plot images are 40 m; 36 m cuts the "
                         "held-out part of the NEON crop into 2 rows of 6)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-class-check", action="store_true")
    ap.add_argument("--gsd", default="auto",
                    help="segment's --gsd (auto, native or metres); native reads the raster "
                    "as segment reads an image without a CRS when --pixel-size is not given")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    import torch

    from rrsis_geo.inference.segmenter import Segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {"class_check": not args.no_class_check, "gsd": args.gsd}
    results = {}
    for w in args.weights or [None]:
        name = Path(w).stem if w else "default"
        seg = Segmenter(w, device="cpu")
        res = {"windows": window_metrics(args.raster, args.boxes, args.window_m, seg,
                                         args.expression, extra)}
        if args.dataset:
            res["chips"] = chip_metrics(args.dataset, w, args.threads or 0)
        results[w or "default"] = res
        b = res["windows"]
        print(f"== {name} ({w or 'shipped model'})")
        print(f"  '{args.expression}' --mode all on {b['windows']} held-out windows of "
              f"{b['window_m']:g} m ({b['crowns']} crowns): box recall {b['box_recall']:.3f}, "
              f"pixel precision {b['pixel_precision']:.3f} (chance {b['chance_precision']:.3f}; "
              f"predicted {b['predicted_share']:.3f} of the area; {b['seconds']:.1f} s)")
        if "chips" in res:
            c = res["chips"]
            print(f"  held-out chips (test split): mIoU {c['mIoU']:.3f} over {c['count']} "
                  f"sentences with a referent; {c['absent_empty']:.2f} of {c['absent']} absent "
                  "sentences painted nothing")
            for k, v in c["types"].items():
                print(f"    type {k:<22} mIoU {v:.3f}")
            for k, (v, n) in c["classes"].items():
                print(f"    class {k:<21} mIoU {v:.3f}  (n={n})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
