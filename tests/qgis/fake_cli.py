"""A stand-in for ``rrsis-geo segment`` that honours the CLI contract, for plugin tests.

Pure Python + GDAL/OGR (available to the QGIS interpreter); no numpy, no torch. It reads the
raster's CRS and extent, emits ``--progress jsonl`` events and writes a GeoPackage layer
``referred_objects`` (expression, score, area_m2, rank) in the raster's CRS, atomically.

Behaviour is chosen with the environment variable ``RRSIS_FAKE_MODE``:
    ok (default)   two quick stages of progress, one object (``--mode all``: two)
    zero           a valid, empty layer; ``objects: 0``
    slow           leaves a temp file + scratch folder beside the output, then emits tile progress
                   every 0.05 s for a minute (to test cancel)
    slow_stubborn  like slow but ignores SIGTERM (cancel must escalate to SIGKILL)
    exit:N         one ``rrsis-geo: error: ...`` line on stderr, exit code N
    sigkill        kills itself with SIGKILL after the first progress line (like the OOM killer)
    noisy          also prints non-JSON lines on stdout and warnings on stderr
``RRSIS_FAKE_ARGV_LOG``: if set, the arguments and a few environment facts are written there as
JSON, so tests can check how the plugin builds the command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

MODE = os.environ.get("RRSIS_FAKE_MODE", "ok")


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"rrsis-geo: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rrsis-geo")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("segment")
    s.add_argument("input")
    s.add_argument("-e", "--expression", required=True)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--weights")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    s.add_argument("--class-check", dest="class_check", action="store_true", default=True)
    s.add_argument("--no-class-check", dest="class_check", action="store_false")
    s.add_argument("--tile-size", type=int)
    s.add_argument("--overlap", type=int)
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--gsd", default="auto")
    s.add_argument("--pixel-size", type=float)
    s.add_argument("--bands")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--min-area", type=float, default=0.0)
    s.add_argument("--simplify", type=float, default=1.0)
    s.add_argument("--mode", choices=["single", "all"], default="single")
    s.add_argument("--max-objects", type=int)
    s.add_argument("--min-score", type=float, default=0.5)
    s.add_argument("--prob-raster")
    s.add_argument("--roi")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--progress", choices=["bar", "jsonl", "none"], default="bar")
    try:
        return p.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage message
        sys.exit(2 if exc.code else 0)


def write_gpkg(path: str, wkt: str, boxes: list[tuple[float, float, float, float]],
               expression: str) -> None:
    """One polygon per box, written to a temp file in the same folder, then renamed."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}.gpkg")
    drv = ogr.GetDriverByName("GPKG")
    ds = drv.CreateDataSource(tmp)
    srs = None
    if wkt:  # an image without a CRS: a layer without one
        srs = osr.SpatialReference()
        srs.ImportFromWkt(wkt)
    lyr = ds.CreateLayer("referred_objects", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("expression", ogr.OFTString))
    lyr.CreateField(ogr.FieldDefn("score", ogr.OFTReal))
    lyr.CreateField(ogr.FieldDefn("area_m2", ogr.OFTReal))
    lyr.CreateField(ogr.FieldDefn("rank", ogr.OFTInteger))
    for rank, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("expression", expression)
        f.SetField("score", 0.9 / rank)
        f.SetField("area_m2", abs((x1 - x0) * (y1 - y0)))
        f.SetField("rank", rank)
        f.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
        lyr.CreateFeature(f)
    ds = None
    os.replace(tmp, path)


def roi_file_content(roi: str | None) -> dict | None:
    """What a ``--roi`` vector file holds (it is a temporary file the plugin removes after the
    run): its features' union as WKT, the layer's CRS as WKT and the feature count."""
    if not roi or not os.path.isfile(roi):
        return None
    from osgeo import ogr

    ogr.UseExceptions()
    ds = ogr.Open(roi)
    lyr = ds.GetLayer(0)
    union = None
    for f in lyr:
        g = f.GetGeometryRef().Clone()
        union = g if union is None else union.Union(g)
    srs = lyr.GetSpatialRef()
    return {"wkt": union.ExportToWkt() if union else None, "features": lyr.GetFeatureCount(),
            "crs": srs.ExportToWkt() if srs else None}


def main(argv: list[str]) -> None:
    args = parse(argv)
    if os.environ.get("RRSIS_FAKE_ARGV_LOG"):
        with open(os.environ["RRSIS_FAKE_ARGV_LOG"], "w", encoding="utf-8") as fh:
            json.dump({"argv": argv, "pythonpath": os.environ.get("PYTHONPATH"),
                       "pythonhome": os.environ.get("PYTHONHOME"),
                       "roi_file": roi_file_content(args.roi)}, fh)
    jsonl = args.progress == "jsonl"
    if MODE.startswith("exit:"):
        code = int(MODE.split(":", 1)[1])
        fail({2: "invalid value for '--tile-size'", 3: f"cannot read raster {args.input}",
              4: "weights file not found: x.safetensors", 5: "out of memory at batch size 1",
              130: "interrupted"}.get(code, "something went wrong"), code)

    from osgeo import gdal

    gdal.UseExceptions()
    try:
        ds = gdal.Open(args.input)
    except RuntimeError as exc:
        fail(f"cannot read raster {args.input}: {exc}", 3)
    wkt = ds.GetProjection()
    if not wkt and ds.GetGCPCount():
        fail(f"{args.input}: raster is georeferenced by GCPs only; warp it first with gdalwarp",
             3)
    gt = ds.GetGeoTransform()
    w, h = ds.RasterXSize, ds.RasterYSize
    xmin, ymax = gt[0], gt[3]
    xmax, ymin = xmin + gt[1] * w, ymax + gt[5] * h
    ds = None

    if jsonl:
        emit({"event": "progress", "stage": "open", "done": 0, "total": 0})
        emit({"event": "message", "level": "info", "text": f"fake model on {args.device}"})
    if MODE == "noisy":
        print("this is not JSON", flush=True)
        sys.stderr.write("UserWarning: something harmless\n")
        sys.stderr.flush()
        emit({"event": "message", "level": "warning", "text": "a fake warning"})
    if MODE.startswith("slow"):
        if MODE == "slow_stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        folder, name = os.path.split(os.path.abspath(args.output))
        with open(os.path.join(folder, f".{name}.tmp-{os.getpid()}.gpkg"), "wb") as fh:
            fh.write(b"partial")
        os.makedirs(args.output + ".rrsis-work", exist_ok=True)
        with open(os.path.join(args.output + ".rrsis-work", "acc.bin"), "wb") as fh:
            fh.write(b"\0" * 1024)
        total = 1200
        for i in range(total):
            if jsonl:
                emit({"event": "progress", "stage": "tiles", "done": i, "total": total})
            time.sleep(0.05)
    if MODE == "sigkill":
        emit({"event": "progress", "stage": "tiles", "done": 1, "total": 4})
        os.kill(os.getpid(), signal.SIGKILL)

    total = 4
    for i in range(total + 1):
        if jsonl:
            emit({"event": "progress", "stage": "tiles", "done": i, "total": total})
        time.sleep(0.01)
    if jsonl:
        emit({"event": "progress", "stage": "select", "done": 0, "total": 0})
    cx, cy, dx, dy = (xmin + xmax) / 2, (ymin + ymax) / 2, (xmax - xmin) / 8, (ymax - ymin) / 8
    boxes = [] if MODE == "zero" else [(cx - dx, cy - dy, cx + dx, cy + dy)]
    if args.mode == "all" and boxes:
        boxes.append((xmin + dx, ymin + dy, xmin + 2 * dx, ymin + 2 * dy))
    write_gpkg(args.output, wkt, boxes, args.expression.strip())
    outputs = {"vector": args.output}
    if args.prob_raster:
        drv = gdal.GetDriverByName("GTiff")
        pr = drv.Create(args.prob_raster, w, h, 1, gdal.GDT_Float32)
        pr.SetProjection(wkt)
        pr.SetGeoTransform(gt)
        pr = None
        outputs["prob_raster"] = args.prob_raster
    if jsonl:
        emit({"event": "progress", "stage": "write", "done": 1, "total": 1})
        emit({"event": "result", "outputs": outputs, "objects": len(boxes),
              "timings": {"tiles": 0.05}, "peak_rss_mb": 42.0})


if __name__ == "__main__":
    main(sys.argv[1:])
