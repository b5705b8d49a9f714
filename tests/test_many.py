"""``segment-many`` on a real Dask LocalCluster (2 worker processes) with the stand-in model.

One cluster serves the whole module and one 6-scene run is shared by the tests that only read its
results; the resume and killed-worker tests make their own runs on the same cluster (the
killed-worker test comes last because it replaces the workers' cached model).

The cluster tests are marked ``slow``: starting two worker processes that import torch and
torchgeo costs 15-45 s on a 2-core machine (the tests themselves take < 1 s each). Run them with
``pytest -m slow tests/test_many.py``; the rest of the module needs no cluster.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from rrsis_geo.cli.main import cli
from rrsis_geo.errors import UsageError
from rrsis_geo.inference import many, many_worker
from rrsis_geo.inference.many import (MERGED_NAME, exit_code_for, expand_inputs, merge_layers,
                                      plan_scenes, segment_many)
from rrsis_geo.inference.many_worker import ModelSpec
from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
from rrsis_geo.inference.segmenter import Segmenter
from rrsis_geo.progress import Reporter
from tests.standin import make_red_segmenter

EXPR = "the red square"
CORRUPT = 3  # index of the unreadable scene
OTHER_CRS = 4  # index of the scene in EPSG:32634 (the others are EPSG:32633)


def write_scene(path: Path, index: int) -> Path:
    """80x96 px, 0.5 m, grey-green ground with one red square at an index-dependent place."""
    if index == CORRUPT:
        path.write_bytes(b"II*\x00 this is not a GeoTIFF " * 40)
        return path
    rng = np.random.default_rng(index)
    h, w = 80, 96
    arr = np.empty((3, h, w), np.uint8)
    for b, v in enumerate((90, 115, 77)):
        arr[b] = np.clip(v + rng.normal(0, 5, (h, w)), 0, 255)
    r0, c0 = 8 + 6 * index, 10 + 9 * index
    arr[0, r0:r0 + 20, c0:c0 + 24] = 255
    arr[1:, r0:r0 + 20, c0:c0 + 24] = 0
    crs = "EPSG:32634" if index == OTHER_CRS else "EPSG:32633"
    origin = (300_000.0, 5_000_000.0) if index == OTHER_CRS else (700_000.0 + 100 * index,
                                                                   5_000_000.0)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                       crs=crs, transform=from_origin(*origin, 0.5, 0.5)) as dst:
        dst.write(arr)
    return path


def _warm() -> None:
    """Import the heavy stack (torch, torchgeo, rasterio...) in a worker."""
    import rrsis_geo.geo.tiling  # noqa: F401
    import rrsis_geo.inference.pipeline  # noqa: F401


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    lc = many.local_cluster(2, 1)
    client = distributed.Client(lc)
    client.wait_for_workers(2)
    # import the heavy stack on both workers first, so that both are free when scenes arrive
    client.gather([client.submit(_warm, workers=[w], pure=False, key=f"warm-{i}")
                   for i, w in enumerate(client.scheduler_info()["workers"])])
    yield client
    client.close()
    lc.close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("scenes")
    return [write_scene(d / f"scene_{i}.tif", i) for i in range(6)]


@pytest.fixture(scope="module")
def serial(scenes, tmp_path_factory) -> dict[int, Path]:
    """The reference: ``segment_raster`` on each readable scene, one after the other."""
    d = tmp_path_factory.mktemp("serial")
    seg = Segmenter(model=make_red_segmenter(), device="cpu")
    outs = {}
    for i, p in enumerate(scenes):
        if i != CORRUPT:
            outs[i] = Path(segment_raster(p, EXPR, d / f"{p.stem}.gpkg", SegmentOptions(),
                                          segmenter=seg)["outputs"]["vector"])
    return outs


@pytest.fixture(scope="module")
def run(cluster, scenes, serial, tmp_path_factory):
    out = tmp_path_factory.mktemp("many")
    result = segment_many([str(p) for p in scenes], EXPR, out, SegmentOptions(), device="cpu",
                          client=cluster, model_factory=make_red_segmenter)
    return out, result


def _frame(path, layer="referred_objects"):
    return pyogrio.read_dataframe(path, layer=layer)


# -- the shared 6-scene run ----------------------------------------------------------------------

@pytest.mark.slow
def test_outputs_identical_to_serial_segment(run, serial, scenes):
    out, result = run
    for i, ref_path in serial.items():
        got, ref = _frame(out / f"{scenes[i].stem}.gpkg"), _frame(ref_path)
        assert len(ref) == 1  # the stand-in finds the red square in every readable scene
        assert got.crs == ref.crs
        assert list(got.columns) == list(ref.columns)
        cols = [c for c in ref.columns if c != "geometry"]
        assert got[cols].to_dict("records") == ref[cols].to_dict("records")
        assert all(a.equals_exact(b, 0.0) for a, b in zip(got.geometry, ref.geometry))


@pytest.mark.slow
def test_corrupt_scene_reported_and_others_complete(run, scenes):
    out, result = run
    assert result["scenes"] == 6 and result["succeeded"] == 5 and result["skipped"] == 0
    assert [f["input"] for f in result["failed"]] == [str(scenes[CORRUPT])]
    assert result["failed"][0]["exit_code"] == 3 and result["failed"][0]["error"]
    assert not (out / f"{scenes[CORRUPT].stem}.gpkg").exists()
    assert sorted(p.name for p in out.glob("*.gpkg")) == sorted(
        [MERGED_NAME] + [f"{p.stem}.gpkg" for i, p in enumerate(scenes) if i != CORRUPT])
    assert exit_code_for(result) == 3


@pytest.mark.slow
def test_model_loaded_and_text_encoded_once_per_worker(run):
    _, result = run
    ok = [r for r in result["scene_results"] if r["status"] == "ok"]
    assert len({r["worker"] for r in ok}) == 2  # both workers took scenes
    assert all(r["model_loads"] == 1 and r["encode_calls"] == 1 for r in ok)


@pytest.mark.slow
def test_merged_has_source_one_crs_and_stable_order(run, scenes):
    out, result = run
    merged = _frame(out / MERGED_NAME)
    assert result["outputs"]["merged"] == str(out / MERGED_NAME)
    assert merged.crs.to_epsg() == 32633 and result["crs"] == "EPSG:32633"
    expected = [str(p) for i, p in enumerate(scenes) if i != CORRUPT]
    assert list(merged["source"]) == expected  # input order (one object per scene)
    assert result["objects"] == 5
    # the EPSG:32634 scene was reprojected, its own layer was not
    own = _frame(out / f"{scenes[OTHER_CRS].stem}.gpkg")
    assert own.crs.to_epsg() == 32634
    row = merged[merged["source"] == str(scenes[OTHER_CRS])]
    want = own.to_crs(32633).geometry.iloc[0]
    assert row.geometry.iloc[0].equals_exact(want, 1e-6)
    assert row["area_m2"].iloc[0] == own["area_m2"].iloc[0]  # true area kept


@pytest.mark.slow
def test_resume_skips_finished_scenes(run, cluster, scenes, tmp_path):
    src, _ = run
    out = tmp_path / "again"
    shutil.copytree(src, out)  # copy2 keeps sizes and mtimes, which the done-markers check
    (out / f"{scenes[1].stem}.gpkg").unlink()
    before = (out / f"{scenes[0].stem}.gpkg").stat().st_mtime_ns
    result = segment_many([str(p) for p in scenes], EXPR, out, SegmentOptions(resume=True),
                          device="cpu", client=cluster, model_factory=make_red_segmenter)
    status = [r["status"] for r in result["scene_results"]]
    assert status == ["skipped", "ok", "skipped", "failed", "skipped", "skipped"]
    assert (out / f"{scenes[0].stem}.gpkg").stat().st_mtime_ns == before
    assert (out / f"{scenes[1].stem}.gpkg").exists()
    assert list(_frame(out / MERGED_NAME)["source"]) == [
        str(p) for i, p in enumerate(scenes) if i != CORRUPT]
    # everything finished: a second resume submits nothing (no client needed at all)
    again = segment_many([str(p) for p in scenes[:3]], EXPR, out, SegmentOptions(resume=True),
                         device="cpu", client=object(), model_factory=make_red_segmenter)
    assert [r["status"] for r in again["scene_results"]] == ["skipped"] * 3


@pytest.mark.slow
def test_cli_over_scheduler_reports_every_failed_scene(cluster, tmp_path):
    """--scheduler ADDRESS; missing inputs fail per scene (exit 3), nothing merged."""
    listing = tmp_path / "scenes.txt"
    listing.write_text("# two scenes that do not exist\nmissing_a.tif\n\nmissing_b.tif\n")
    res = CliRunner().invoke(cli, ["segment-many", f"@{listing}", "-e", EXPR, "--out-dir",
                                   str(tmp_path / "out"), "--scheduler",
                                   cluster.scheduler.address, "--progress", "jsonl",
                                   "--weights", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 3, res.output
    assert res.output.count('"level": "warning"') >= 2
    assert "no such file" in res.output
    assert not (tmp_path / "out" / MERGED_NAME).exists()


@dataclass(frozen=True)
class KillOnce:
    """Model factory whose first call, in whichever worker, kills that worker process."""

    marker: str

    def __call__(self):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return make_red_segmenter()
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)  # a hard death: no exception reaches Dask, the worker just disappears


@pytest.mark.slow
def test_killed_worker_scene_is_retried(cluster, scenes, serial, tmp_path):
    marker = tmp_path / "killed.pid"
    picks = [0, 1, 2]
    result = segment_many([str(scenes[i]) for i in picks], EXPR, tmp_path / "out",
                          SegmentOptions(), device="cpu", client=cluster,
                          model_factory=KillOnce(str(marker)))
    assert marker.exists()  # a worker really died mid-scene
    killed_pid = marker.read_text()
    assert result["failed"] == [] and result["succeeded"] == 3
    assert all(not r["worker"].endswith(f":{killed_pid}") for r in result["scene_results"])
    for i in picks:
        got, ref = _frame(tmp_path / "out" / f"{scenes[i].stem}.gpkg"), _frame(serial[i])
        assert all(a.equals_exact(b, 0.0) for a, b in zip(got.geometry, ref.geometry))


# -- no cluster needed ---------------------------------------------------------------------------

def test_expand_inputs_files_globs_and_lists(tmp_path):
    for name in ("b.tif", "a.tif", "c.TIF"):
        (tmp_path / name).write_bytes(b"")
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "paths.txt").write_text("# comment\n../a.tif\n\n" + str(tmp_path / "c.TIF") + "\n")
    got = expand_inputs([str(tmp_path / "*.tif"), f"@{sub / 'paths.txt'}",
                         str(sub / "paths.txt"), "nope.tif"])
    rel = [os.path.relpath(os.path.abspath(p), tmp_path) for p in got]
    assert rel[:3] == ["a.tif", "b.tif", "c.TIF"]  # glob sorted; duplicates dropped
    assert rel[3:] == [os.path.relpath(os.path.abspath("nope.tif"), tmp_path)]
    with pytest.raises(UsageError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jp2")])
    with pytest.raises(UsageError):
        expand_inputs([])


def test_plan_scenes_unique_stems(tmp_path):
    plans = plan_scenes(["x/a.tif", "y/a.tif", "merged.tif", "a-2.tif"], tmp_path)
    assert [Path(p.output).name for p in plans] == ["a.gpkg", "a-2.gpkg", "merged-2.gpkg",
                                                     "a-2-2.gpkg"]
    assert all(Path(p.marker).parent.name == many.MARKER_DIR for p in plans)


def test_merge_layers_dst_crs_and_empty(tmp_path):
    from shapely.geometry import box

    from rrsis_geo.geo.output import write_layer

    a = write_layer(tmp_path / "a.gpkg", [{"expression": "x", "score": 0.9, "area_m2": 4.0,
                                           "rank": 2},
                                          {"expression": "x", "score": 0.95, "area_m2": 9.0,
                                           "rank": 1}],
                    [box(500000, 5e6, 500002, 5e6 + 2), box(500010, 5e6, 500013, 5e6 + 3)],
                    "EPSG:32633")
    empty = write_layer(tmp_path / "e.gpkg", [], [], "EPSG:32634")
    res = merge_layers([("e.tif", str(empty)), ("a.tif", str(a))], tmp_path / "m.gpkg",
                       dst_crs="EPSG:4326")
    m = _frame(tmp_path / "m.gpkg")
    assert res["features"] == 2 and m.crs.to_epsg() == 4326
    assert list(m["rank"]) == [1, 2] and list(m["source"]) == ["a.tif", "a.tif"]
    assert 14.9 < m.geometry.iloc[0].centroid.x < 15.1  # UTM 33N central meridian
    res = merge_layers([("e.tif", str(empty))], tmp_path / "m2.gpkg")
    info = pyogrio.read_info(tmp_path / "m2.gpkg", layer="referred_objects")
    assert res["crs"] == "EPSG:32634" and info["features"] == 0
    assert "source" in list(info["fields"])
    with pytest.raises(UsageError, match="not a CRS"):
        merge_layers([], tmp_path / "m3.gpkg", dst_crs="EPSG:nonsense")


def test_merge_leaves_out_layers_without_crs(tmp_path):
    """An image without a CRS has its objects in pixel coordinates: no common frame with the
    other scenes, so the merge leaves its layer out (and names it) instead of failing."""
    from shapely.geometry import box

    from rrsis_geo.geo.output import write_layer

    row = {"expression": "x", "score": 0.9, "area_m2": 4.0, "rank": 1}
    a = write_layer(tmp_path / "a.gpkg", [row], [box(500000, 5e6, 500002, 5e6 + 2)],
                    "EPSG:32633")
    px = write_layer(tmp_path / "p.gpkg", [row, row], [box(0, 0, 2, 2), box(5, 5, 7, 7)], None)
    res = merge_layers([("p.png", str(px)), ("a.tif", str(a))], tmp_path / "m.gpkg")
    m = _frame(tmp_path / "m.gpkg")
    assert res["left_out"] == ["p.png"] and res["features"] == 1
    assert list(m["source"]) == ["a.tif"] and m.crs.to_epsg() == 32633
    res = merge_layers([("p.png", str(px))], tmp_path / "m2.gpkg")
    assert res["path"] is None and res["left_out"] == ["p.png"]
    assert not (tmp_path / "m2.gpkg").exists()


def test_exit_codes():
    assert exit_code_for({"scenes": 3, "failed": []}) == 0
    assert exit_code_for({"scenes": 3, "failed": [{"exit_code": 4}]}) == 3
    assert exit_code_for({"scenes": 2, "failed": [{"exit_code": 4}, {"exit_code": 4}]}) == 4
    assert exit_code_for({"scenes": 2, "failed": [{"exit_code": 4}, {"exit_code": 1}]}) == 3


def test_scene_key_changes_with_expression_and_options(tmp_path):
    p = write_scene(tmp_path / "s.tif", 0)
    spec = ModelSpec(factory=make_red_segmenter).with_token()
    k = many_worker.scene_key(str(p), EXPR, SegmentOptions(), spec)
    assert k == many_worker.scene_key(str(p), EXPR, SegmentOptions(resume=True), spec)
    assert k != many_worker.scene_key(str(p), "the blue square", SegmentOptions(), spec)
    assert k != many_worker.scene_key(str(p), EXPR, SegmentOptions(threshold=0.6), spec)


def test_missing_weights_fail_before_any_worker(tmp_path):
    res = CliRunner().invoke(cli, ["segment-many", str(write_scene(tmp_path / "s.tif", 0)),
                                   "-e", EXPR, "--out-dir", str(tmp_path / "o"),
                                   "--weights", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 4 and "weights file not found" in res.output


def test_without_dask_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    res = CliRunner().invoke(cli, ["segment-many", "x.tif", "-e", EXPR, "--out-dir",
                                   str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "rrsis-geo: error: segment-many needs Dask distributed: "
        "pip install 'rrsis_geo[distributed]'"]


def test_segment_many_api_reports_progress_jsonl(tmp_path, monkeypatch, capsys):
    """Resume with every scene done: progress over scenes reaches total without a cluster."""
    import io
    import json

    stream = io.StringIO()
    p = write_scene(tmp_path / "s.tif", 0)
    out = tmp_path / "o"
    seg = Segmenter(model=make_red_segmenter(), device="cpu")
    spec = ModelSpec(device="cpu", factory=make_red_segmenter).with_token()
    plan = plan_scenes([str(p)], out)[0]
    out.mkdir()
    monkeypatch.setattr(many_worker, "worker_segmenter", lambda spec, expression=None: seg)
    rec = many_worker.run_scene(plan, EXPR, SegmentOptions(), spec, None)  # the task, in-process
    assert rec["status"] == "ok" and Path(plan.marker).exists()
    result = segment_many([str(p)], EXPR, out, SegmentOptions(resume=True), device="cpu",
                          model_factory=make_red_segmenter, reporter=Reporter("jsonl", stream))
    lines = [json.loads(s) for s in stream.getvalue().splitlines()]
    scenes_ev = [e for e in lines if e.get("stage") == "scenes"]
    assert scenes_ev[-1]["done"] == scenes_ev[-1]["total"] == 1
    assert result["skipped"] == 1 and result["objects"] == 1
