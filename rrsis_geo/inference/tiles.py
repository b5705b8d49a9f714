"""The tile reader: tiles read and normalized in a background thread, so that raster I/O overlaps
the model's forward passes (:class:`TileReader`), or in line (:func:`iter_tiles`).
"""

from __future__ import annotations

import os
import queue
import threading

def iter_tiles(path: str, info, grid, tiles, bands, normalizer, skip, stop=None, region=None):
    """Yield ``(kind, tile, image, valid)`` for each tile; kind is "tile", "skip" (done
    already) or "outside" (wholly outside ``region``, a ``geo.roi.RegionMask``: not read)."""
    import rasterio

    from rrsis_geo.geo.raster import bounded_gdal_cache
    from rrsis_geo.geo.tiling import read_tile

    with bounded_gdal_cache(), rasterio.open(path) as src:
        for tile in tiles:
            if stop is not None and stop.is_set():
                break
            if skip(tile):
                yield ("skip", tile, None, None)
                continue
            if region is not None and not region.touches(tile.row_off, tile.col_off,
                                                         tile.size, tile.size):
                yield ("outside", tile, None, None)
                continue
            img, valid = read_tile(src, info, grid, tile, bands, normalizer)
            if region is not None:
                img, valid = region.apply(img, valid, tile.row_off, tile.col_off)
            yield ("tile", tile, img, valid)


#: niceness of the tile-reader thread (see ``TileReader``)
READER_NICE = 10


def lower_thread_priority(nice: int) -> None:
    """Give the calling thread (not the process) at least this niceness; no-op where unsupported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except (AttributeError, OSError):  # not Linux, or not allowed: reading just competes more
        pass


class TileReader(threading.Thread):
    """Reads and normalizes tiles in a background thread so I/O overlaps the model's forward.

    Also on a CPU whose cores torch already uses: reading in line between batches measured
    slower on 2 cores (6 paired runs of bench/pipeline.py (a): +0.15 on the ratio). The thread
    runs at a lower priority (nice +10, Linux; per thread): then it reads in the gaps the
    forward leaves instead of preempting one of torch's OpenMP workers, whose partner would wait
    for it at the end of the parallel region (6 paired runs: -0.13 on the ratio). It cannot
    starve: when the queue runs dry the main thread waits and the cores are free. After the last
    tile it reads the scene overview for the global pass (``then``), which then overlaps the
    last forwards.
    """

    def __init__(self, *args, then=None, region=None) -> None:
        super().__init__(daemon=True)
        self.args = args
        self.region = region
        self.then = then
        self.then_result = None
        self.q: queue.Queue = queue.Queue(maxsize=8)
        self.stop = threading.Event()

    def run(self) -> None:
        lower_thread_priority(READER_NICE)
        try:
            for item in iter_tiles(*self.args, stop=self.stop, region=self.region):
                self.q.put(item)
        except Exception as exc:  # surfaced in the consumer
            self.q.put(("error", None, exc, None))
            self.q.put(("end", None, None, None))
            return
        self.q.put(("end", None, None, None))
        if self.then is not None and not self.stop.is_set():
            try:
                self.then_result = self.then()
            except Exception:  # noqa: BLE001 - optional prefetch: the consumer redoes it in line
                self.then_result = None

    def __iter__(self):
        while True:
            item = self.q.get()
            if item[0] == "end":
                return
            if item[0] == "error":
                raise item[2]
            yield item
