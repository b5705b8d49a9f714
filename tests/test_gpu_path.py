"""The GPU throughput path, covered on CPU: the batch size from free memory (a pure rule, fed
fake memory figures), pinned copies skipped without CUDA, the tile read-ahead thread (bounded,
same tiles as reading in line), and --batch-size auto on CPU."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from rrsis_geo.inference.device import (CPU_BATCH_SIZE, GPU_BATCH_CAP, GPU_MEMORY_SHARE,
                                        batch_size_from_memory, host_to_device)
from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
from rrsis_geo.inference.segmenter import Segmenter
from tests.standin import RedSegmenter
from tests.test_pipeline import scene, write_tif

GiB = 2**30


def test_batch_size_from_free_memory():
    # 80 GiB free, 1 GiB per tile: 48 fit in 60 % of it, the cap keeps 32
    assert batch_size_from_memory(80 * GiB, 1 * GiB) == GPU_BATCH_CAP
    # 10 GiB free, 1 GiB per tile: 60 % of 10 = 6
    assert batch_size_from_memory(10 * GiB, 1 * GiB) == int(10 * GPU_MEMORY_SHARE)
    assert batch_size_from_memory(10 * GiB, 1 * GiB, share=0.3) == 3
    assert batch_size_from_memory(10 * GiB, 300 * 2**20, cap=8) == 8
    # less than one tile's need free: still 1 (the OOM back-off then falls back to CPU)
    assert batch_size_from_memory(100 * 2**20, 1 * GiB) == 1
    assert batch_size_from_memory(0, 1 * GiB) == 1
    assert batch_size_from_memory(-5, 1 * GiB) == 1
    # a probe that measured nothing: the cap
    assert batch_size_from_memory(10 * GiB, 0) == GPU_BATCH_CAP
    # more free memory never gives a smaller batch
    sizes = [batch_size_from_memory(f * GiB // 4, GiB // 2) for f in range(0, 200)]
    assert sizes == sorted(sizes) and sizes[-1] == GPU_BATCH_CAP


def test_host_to_device_skips_pinning_without_cuda(monkeypatch):
    def no_pinning(self, *a, **k):
        raise AssertionError("pinned memory asked for on CPU")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pinning)
    x = torch.arange(12.0).view(3, 4)
    assert host_to_device(x, torch.device("cpu")) is x
    if not torch.cuda.is_available():  # a CUDA device name without CUDA: nothing pinned either
        assert host_to_device(x, torch.device("cuda")) is x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_to_device_pins_and_copies_on_cuda():
    x = torch.arange(12.0).view(3, 4)
    y = host_to_device(x, torch.device("cuda"))
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)


def test_batch_size_auto_on_cpu_is_the_cpu_default():
    seg = Segmenter(model=RedSegmenter(input_size=64), device="cpu")
    assert seg.resolve_batch_size("auto", 64) == CPU_BATCH_SIZE
    assert seg.resolve_batch_size(3, 64) == 3
    opts = SegmentOptions(batch_size="AUTO")
    opts.validate()
    assert opts.batch_size == "auto"
    from rrsis_geo.errors import UsageError

    for bad in ("many", "0", "2.5"):
        with pytest.raises(UsageError, match="--batch-size"):
            SegmentOptions(batch_size=bad).validate()


def test_batch_size_auto_gives_the_same_result_as_four(tmp_path):
    seg = Segmenter(model=RedSegmenter(input_size=64), device="cpu")
    tif = write_tif(tmp_path / "in.tif", scene(200, 260, [(30, 30, 70, 70), (120, 150, 170, 230)]))
    out = {}
    for bs in ("auto", 4):
        res = segment_raster(str(tif), "the red roof", str(tmp_path / f"{bs}.gpkg"),
                             SegmentOptions(tile_size=64, overlap=16, batch_size=bs, mode="all",
                                            prob_raster=str(tmp_path / f"{bs}.tif")),
                             segmenter=seg)
        import rasterio

        with rasterio.open(tmp_path / f"{bs}.tif") as src:
            out[bs] = (res["objects"], src.read(1))
    assert out["auto"][0] == out[4][0] == 2
    assert np.array_equal(out["auto"][1], out[4][1])


def test_read_ahead_is_bounded_and_reads_the_same_tiles(tmp_path):
    """The background reader stops at its queue's bound while the model (here: nobody) does not
    take tiles, and yields exactly the tiles and arrays reading in line gives."""
    from rrsis_geo.geo.radiometry import compute_normalizer
    from rrsis_geo.geo.raster import open_raster
    from rrsis_geo.geo.workgrid import make_work_grid
    from rrsis_geo.geo.tiling import plan_tiles
    from rrsis_geo.inference.tiles import TileReader, iter_tiles

    tif = write_tif(tmp_path / "in.tif", scene(400, 400, [(30, 30, 70, 70)]))
    info = open_raster(str(tif))
    grid = make_work_grid(info, None)
    tiles = plan_tiles(info, grid, 64, 16)
    assert len(tiles) > 20
    norm = compute_normalizer(str(tif), (1, 2, 3))
    reads = []
    lock = threading.Lock()

    def skip(tile):  # called once per tile, just before the reader reads it
        with lock:
            reads.append(tile.index)
        return False

    args = (str(tif), info, grid, tiles, (1, 2, 3), norm)
    reader = TileReader(*args, skip)
    reader.start()
    deadline = time.monotonic() + 10
    while reader.q.qsize() < reader.q.maxsize and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a reader that ignored the bound would read on now
    assert reader.q.qsize() == reader.q.maxsize
    assert len(reads) <= reader.q.maxsize + 1 < len(tiles)  # one more waits to be queued
    ahead = list(reader)
    reader.join(timeout=10)
    inline = list(iter_tiles(*args, lambda t: False))
    assert [t.index for _, t, _, _ in ahead] == [t.index for _, t, _, _ in inline]
    for (_, _, a, va), (_, _, b, vb) in zip(ahead, inline):
        assert np.array_equal(a, b) and np.array_equal(va, vb)
