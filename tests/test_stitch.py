"""geo.stitch: Hann blending, disk-backed accumulator (bounded RSS, resume), COG writer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rrsis_geo.errors import UsageError
from rrsis_geo.geo.stitch import WINDOW_FLOOR, ProbAccumulator, hann_window, write_prob_cog
from tests.rasters import utm_grid


# ------------------------------------------------------------------------------ window
def test_hann_window_positive_symmetric_peaked() -> None:
    w = hann_window(64)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert w.min() >= WINDOW_FLOOR and w.min() > 0
    assert w.max() <= 1.0 and w.max() > 0.99
    np.testing.assert_allclose(w, w[::-1, :])
    np.testing.assert_allclose(w, w.T)
    assert w[32, 32] > w[32, 16] > w[32, 0]
    assert hann_window((8, 16)).shape == (8, 16)


# --------------------------------------------------------------------------- blending
def test_overlapping_constant_tiles_blend_without_seam(tmp_path: Path) -> None:
    acc = ProbAccumulator(tmp_path, 64, 96, 64)
    acc.add(np.full((64, 64), 0.2, np.float32), None, 0, 0)
    acc.add(np.full((64, 64), 0.2, np.float32), None, 0, 32)
    # equal predictions: exactly that value everywhere, overlap included
    np.testing.assert_allclose(acc.read(), 0.2, atol=1e-6)

    acc2 = ProbAccumulator(tmp_path / "b", 64, 96, 64)
    acc2.add(np.full((64, 64), 0.2, np.float32), None, 0, 0)
    acc2.add(np.full((64, 64), 0.8, np.float32), None, 0, 32)
    row = acc2.read(slice(20, 21), None)[0]
    steps = np.abs(np.diff(row))
    # a hard mosaic would jump by 0.6 at one column; the Hann blend spreads it over the overlap
    assert steps.max() < 0.06, steps.max()
    assert np.all(np.diff(row) >= -1e-6)  # monotone from 0.2 to 0.8
    assert row[0] == pytest.approx(0.2, abs=1e-3) and row[-1] == pytest.approx(0.8, abs=1e-3)


def test_edge_pixels_covered_once_keep_their_value_and_overhang_is_clipped(tmp_path: Path) -> None:
    acc = ProbAccumulator(tmp_path, 50, 70, 32)
    rng = np.random.default_rng(0)
    tile = rng.random((32, 32), dtype=np.float32)
    acc.add(tile, None, -10, -5)  # overhangs top and left
    acc.add(tile, None, 30, 50)  # overhangs bottom and right
    out = acc.read()
    np.testing.assert_allclose(out[0:22, 0:27], tile[10:32, 5:32], rtol=1e-5)
    np.testing.assert_allclose(out[30:50, 50:70], tile[0:20, 0:20], rtol=1e-5)
    assert out[25, 35] == 0.0  # never covered


def test_invalid_pixels_contribute_nothing(tmp_path: Path) -> None:
    acc = ProbAccumulator(tmp_path, 32, 48, 32)
    valid = np.ones((32, 32), bool)
    valid[:, :8] = False
    acc.add(np.full((32, 32), 0.9, np.float32), valid, 0, 0)
    acc.add(np.full((32, 32), 0.4, np.float32), None, 0, 16)
    prob, weight = acc.read(with_weight=True)
    assert np.all(prob[:, :8] == 0) and np.all(weight[:, :8] == 0)  # nodata forced to 0
    np.testing.assert_allclose(prob[:, 8:16], 0.9, rtol=1e-6)
    np.testing.assert_allclose(prob[:, 32:], 0.4, rtol=1e-6)
    # NaN predictions (e.g. a model fed padding) never poison the sums
    acc.add(np.full((32, 32), np.nan, np.float32), np.zeros((32, 32), bool), 0, 0)
    assert np.isfinite(acc.read()).all()


def test_read_windows_and_blocks_agree(tmp_path: Path) -> None:
    acc = ProbAccumulator(tmp_path, 40, 30, 16)
    rng = np.random.default_rng(1)
    for r in range(-4, 40, 12):
        for c in range(-4, 30, 12):
            acc.add(rng.random((16, 16), dtype=np.float32), None, r, c)
    full = acc.read()
    blocks = [acc.read(slice(r0, min(40, r0 + 7)), None) for r0 in range(0, 40, 7)]
    assert [b.shape for b in blocks] == [(7, full.shape[1])] * 5 + [(5, full.shape[1])]
    np.testing.assert_array_equal(np.concatenate(blocks), full)
    np.testing.assert_array_equal(acc.read(slice(5, 17), slice(3, 29)), full[5:17, 3:29])
    assert 0.0 <= full.min() and full.max() <= 1.0


# ----------------------------------------------------------------------------- resume
def test_resume_manifest(tmp_path: Path) -> None:
    acc = ProbAccumulator(tmp_path, 20, 20, 16, config_hash="abc")
    assert not acc.resumed and acc.n_done == 0
    acc.add(np.full((16, 16), 0.5, np.float32), None, 0, 0)
    acc.mark_done(0)
    acc.mark_done(7)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config_hash"] == "abc" and manifest["height"] == 20

    again = ProbAccumulator(tmp_path, 20, 20, 16, config_hash="abc")
    assert again.resumed and again.done_tiles == {0, 7}
    assert again.is_done(7) and not again.is_done(1)
    assert again.read()[3, 3] == pytest.approx(0.5)

    # a run killed while appending leaves a partial line: ignored
    with open(tmp_path / "done_tiles.txt", "a") as f:
        f.write("1")
    with open(tmp_path / "done_tiles.txt", "a") as f:
        f.write("x\n")
    assert ProbAccumulator(tmp_path, 20, 20, 16, run_key="abc").done_tiles == {0, 7}

    changed = ProbAccumulator(tmp_path, 20, 20, 16, config_hash="other")
    assert not changed.resumed and changed.n_done == 0 and changed.read().max() == 0.0

    changed.add(np.full((16, 16), 0.5, np.float32), None, 0, 0)
    changed.mark_done(0)
    assert not ProbAccumulator(tmp_path, 20, 21, 16, config_hash="other").resumed  # new shape
    changed = ProbAccumulator(tmp_path, 20, 20, 16, config_hash="other")
    changed.add(np.full((16, 16), 0.5, np.float32), None, 0, 0)
    changed.mark_done(0)
    fresh = ProbAccumulator(tmp_path, 20, 20, 16, config_hash="other", resume=False)
    assert not fresh.resumed and fresh.n_done == 0 and fresh.read().max() == 0.0


def test_row_band_cache_gives_the_same_sums_and_defers_done_marks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    h, w, t, step = 150, 130, 48, 36
    tiles = [(r, c, rng.random((t, t), dtype=np.float32), rng.random((t, t)) > 0.1)
             for r in range(-6, h, step) for c in range(-6, w, step)]
    direct = ProbAccumulator(tmp_path / "d", h, w, t)
    cached = ProbAccumulator(tmp_path / "c", h, w, t, cache_bytes=t * w * 8)
    tiny = ProbAccumulator(tmp_path / "n", h, w, t, cache_bytes=t * w * 8 - 1)  # band too big
    assert cached._band_rows == t and tiny._band_rows == 0
    for i, (r, c, p, v) in enumerate(tiles):
        for acc in (direct, cached):
            acc.add(p, v, r, c)
            acc.mark_done(i)
        if i == 5:  # 4 tiles per row: row 1 (tiles 0-3) was written when row 2 began
            assert ProbAccumulator(tmp_path / "c", h, w, t).done_tiles == {0, 1, 2, 3}
            assert cached.is_done(5)
    # tiles out of order (a resumed run) are fine too
    r, c, p, v = tiles[0]
    for acc in (direct, cached):
        acc.add(p, v, r, c)
    ref, ref_w = direct.read(with_weight=True)
    got, got_w = cached.read(with_weight=True)  # read writes the band first
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_allclose(got_w, ref_w, rtol=1e-6)
    cached.flush()
    again = ProbAccumulator(tmp_path / "c", h, w, t)
    assert again.resumed and again.done_tiles == frozenset(range(len(tiles)))
    np.testing.assert_allclose(again.read(), ref, atol=1e-6)


# ------------------------------------------------------------------------ bounded RSS
_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, numpy as np
    from rrsis_geo.geo.stitch import ProbAccumulator
    n, t, step = 8192, 512, 448
    tile = np.random.default_rng(0).random((t, t), dtype=np.float32)
    valid = np.ones((t, t), bool)
    acc = ProbAccumulator(sys.argv[1], n, n, t, "h")
    acc.add(tile, valid, 0, 0)
    acc.read(slice(0, 64), None)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for r in range(0, n, step):
        for c in range(0, n, step):
            acc.add(tile, valid, r, c)
    total = 0.0
    for r0 in range(0, n, 256):
        total += float(acc.read(slice(r0, r0 + 256), None)[:, ::97].sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((peak - base) / 1024.0, total)
    """
)


@pytest.mark.slow
def test_accumulator_peak_rss_does_not_grow_with_raster(tmp_path: Path) -> None:
    try:
        res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "acc")],
                             capture_output=True, text=True, timeout=300, check=True)
    finally:
        shutil.rmtree(tmp_path / "acc", ignore_errors=True)  # 512 MiB of accumulator files
    growth_mib, total = res.stdout.split()
    full_array_mib = 8192 * 8192 * 4 / 2**20  # 256 MiB per float32 plane; the file holds 2
    assert float(total) > 0
    # one 256-row block (sums 16 MiB + prob 8 MiB + weight 8 MiB) and one tile: far below 256 MiB
    assert float(growth_mib) < 64, f"peak RSS grew {growth_mib} MiB (one array: {full_array_mib})"


# ---------------------------------------------------------------------------------- COG
def _filled_acc(path: Path, h: int, w: int) -> ProbAccumulator:
    acc = ProbAccumulator(path, h, w, 64)
    yy, xx = np.mgrid[:64, :64]
    tile = ((yy + xx) / 126.0).astype(np.float32)
    for r in range(0, h - 32, 48):
        for c in range(0, w - 32, 48):
            acc.add(tile, None, r, c)
    return acc


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_write_prob_cog(tmp_path: Path, dtype: str) -> None:
    h, w = 700, 1100
    grid = utm_grid(h, w)
    acc = _filled_acc(tmp_path / "acc", h, w)
    out = tmp_path / "prob.tif"
    valid_fn = lambda rows, cols: np.arange(cols.start, cols.stop)[None, :].repeat(  # noqa: E731
        rows.stop - rows.start, 0) < 1000
    write_prob_cog(acc, grid, out, valid_fn, dtype=dtype, max_block_pixels=300_000)
    prob, weight = acc.read(with_weight=True)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.crs == grid.crs and ds.transform == grid.transform
        assert (ds.height, ds.width, ds.dtypes[0]) == (h, w, dtype)
        assert ds.block_shapes[0] == (512, 512) and ds.overviews(1)
        data = ds.read(1)
        mask = ds.read_masks(1)
        scale = ds.scales[0]
    expected_valid = (weight > 0) & (np.arange(w)[None, :] < 1000)
    np.testing.assert_array_equal(mask > 0, expected_valid)
    if dtype == "uint8":
        assert scale == pytest.approx(1 / 255)
        np.testing.assert_allclose(data[expected_valid] * scale, prob[expected_valid],
                                   atol=0.5 / 255)
    else:
        np.testing.assert_allclose(data[expected_valid], prob[expected_valid], rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc", "prob.tif"]  # no temp files left


def test_write_prob_cog_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    grid = utm_grid(100, 120)
    acc = _filled_acc(tmp_path / "acc", 100, 120)
    with pytest.raises(UsageError):
        write_prob_cog(acc, grid, tmp_path / "missing" / "prob.tif")

    import rasterio.shutil

    def boom(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise rasterio.errors.RasterioIOError("disk full")

    out = tmp_path / "prob.tif"
    monkeypatch.setattr(rasterio.shutil, "copy", boom)
    with pytest.raises(UsageError, match="disk full"):
        write_prob_cog(acc, grid, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc"]
