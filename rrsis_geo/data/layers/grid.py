"""Chip grid and spatial split for ``dataset build``.

The work grid (the raster resampled to the target ground resolution) is cut into square blocks
whose side is ``--block-size`` metres rounded to a whole number of chips. Each block goes to
train, val or test: the test blocks, then the val blocks, grow as one compact group from a
random start block on the rim of the labelled area (``--seed``), nearest blocks first, until
they hold their fraction of the labelled objects (every object counts in the block of its
centroid; only whole blocks holding objects are held out). Chips never cross splits:

* a val or test chip lies inside blocks of its split, at a stride of one chip (no overlap);
* a train chip lies inside train blocks at ``--stride`` (overlap allowed) and keeps a gutter of
  one chip from every val/test block; a val chip keeps the same gutter from test blocks.

So any train pixel is at least one chip away from any val/test pixel: overlapping or adjacent
chips cannot leak between splits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
_ORDER = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ChipSpec:
    """One chip: top-left corner in work-grid pixels, side, split and block."""

    row: int
    col: int
    size: int
    split: str
    block: str

    @property
    def id(self) -> str:
        return f"{self.split}_r{self.row:06d}_c{self.col:06d}"


@dataclass
class BlockLayout:
    """Blocks of the work grid and their split.

    Attributes:
        block_px: block side in work-grid pixels (a whole number of chips).
        n_rows, n_cols: blocks per column / row.
        split: str array [n_rows, n_cols] of "train"/"val"/"test".
        objects: int array [n_rows, n_cols], labelled objects whose centroid lies in the block.
    """

    block_px: int
    n_rows: int
    n_cols: int
    split: np.ndarray
    objects: np.ndarray

    def block_id(self, r: int, c: int) -> str:
        return f"b{r:03d}_{c:03d}"

    def block_of(self, row: float, col: float) -> tuple[int, int]:
        r = min(self.n_rows - 1, max(0, int(row // self.block_px)))
        c = min(self.n_cols - 1, max(0, int(col // self.block_px)))
        return r, c


def block_pixels(block_size_m: float, res_m: float, chip: int) -> int:
    """Block side in work pixels: ``block_size_m`` rounded to a whole number (>= 1) of chips."""
    n = max(1, round(block_size_m / res_m / chip))
    return int(n * chip)


def assign_blocks(height: int, width: int, block_px: int, centroids_rc: np.ndarray,
                  val_fraction: float, test_fraction: float,
                  rng: np.random.Generator) -> BlockLayout:
    """Assign blocks to splits so that val/test hold about their fraction of the objects.

    Args:
        centroids_rc: float [N, 2] object centroids (row, col) in work pixels.
    """
    n_rows = max(1, math.ceil(height / block_px))
    n_cols = max(1, math.ceil(width / block_px))
    objects = np.zeros((n_rows, n_cols), np.int64)
    for r, c in centroids_rc:
        if 0 <= r < height and 0 <= c < width:
            objects[min(n_rows - 1, int(r // block_px)), min(n_cols - 1, int(c // block_px))] += 1
    split = np.full((n_rows, n_cols), "train", dtype=object)
    total = int(objects.sum())
    # held-out blocks grow as compact groups around a random start block (a compact region
    # loses less of its neighbours to the gutter); only object-holding blocks count
    # a block cut by the raster edge holds no whole val/test chip: it stays train
    full_rows, full_cols = height // block_px, width // block_px
    free = [(r, c) for r in range(n_rows) for c in range(n_cols)
            if objects[r, c] > 0 and r < full_rows and c < full_cols]
    for name, frac in (("test", test_fraction), ("val", val_fraction)):
        if frac <= 0 or total == 0 or len(free) < 2:
            continue
        # start away from the blocks already held out, on the rim of the labelled area (a
        # region in a corner or along an edge has fewer train neighbours to lose to the gutter)
        held = [(r, c) for r in range(n_rows) for c in range(n_cols) if split[r, c] != "train"]
        far = [b for b in free if all(max(abs(b[0] - h[0]), abs(b[1] - h[1])) > 1
                                      for h in held)] or free
        fset = set(free)
        nb = {b: sum((b[0] + dr, b[1] + dc) in fset for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                     if dr or dc) for b in far}
        rim = [b for b in far if nb[b] == min(nb.values())]
        start = rim[int(rng.integers(len(rim)))]
        order = sorted(free, key=lambda b: ((b[0] - start[0]) ** 2 + (b[1] - start[1]) ** 2,
                                            rng.random()))
        goal, got = frac * total, 0
        for b in order:
            if got >= goal or len(free) < 2:  # keep one object-holding block for train
                break
            split[b] = name
            got += int(objects[b])
            free.remove(b)
    return BlockLayout(block_px, n_rows, n_cols, split, objects)


def _offsets(length: int, size: int, stride: int) -> list[int]:
    if length < size:
        return []
    offs = list(range(0, length - size + 1, stride))
    return offs


def plan_chips(layout: BlockLayout, height: int, width: int, chip: int, stride: int,
               region: tuple[int, int, int, int] | None = None) -> list[ChipSpec]:
    """Chips of every split (see the module docstring for the rules).

    Args:
        stride: train stride in pixels (<= chip); val/test use ``chip``.
        region: (row0, col0, row1, col1) in work pixels; chips must intersect it (the labelled
            area), None = everywhere.
    """
    bp = layout.block_px

    def splits_in(r0: int, c0: int, r1: int, c1: int) -> set[str]:
        """Splits of the blocks a pixel window (clipped to the grid) touches."""
        r0, c0 = max(0, r0), max(0, c0)
        r1, c1 = min(height, r1), min(width, c1)
        if r1 <= r0 or c1 <= c0:
            return set()
        return {str(v) for v in layout.split[r0 // bp:(r1 - 1) // bp + 1,
                                             c0 // bp:(c1 - 1) // bp + 1].ravel()}

    chips: list[ChipSpec] = []
    for name in SPLITS:
        step = stride if name == "train" else chip
        later = [s for s in SPLITS if _ORDER[s] > _ORDER[name]]
        for r in _offsets(height, chip, step):
            for c in _offsets(width, chip, step):
                if region is not None:
                    rr0, cc0, rr1, cc1 = region
                    if r + chip <= rr0 or r >= rr1 or c + chip <= cc0 or c >= cc1:
                        continue
                if splits_in(r, c, r + chip, c + chip) != {name}:
                    continue
                g = chip  # gutter of one chip from every later split's blocks
                if splits_in(r - g, c - g, r + chip + g, c + chip + g) & set(later):
                    continue
                br, bc = layout.block_of(r + chip / 2, c + chip / 2)
                chips.append(ChipSpec(r, c, chip, name, layout.block_id(br, bc)))
    return chips
