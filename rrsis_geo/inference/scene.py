"""Scene-level selection of the referred object(s) from the stitched probability mosaic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shapely.geometry.base import BaseGeometry


@dataclass
class SelectedObject:
    geometry: BaseGeometry
    score: float
    area_m2: float
    rank: int
    local_score: float
    global_score: float | None = None


def select_objects(candidates: list[dict[str, Any]], mode: str = "single",
                   max_objects: int | None = None, min_score: float = 0.5) -> list[dict[str, Any]]:
    """Keep the referent(s) among scored candidates.

    ``candidates``: dicts with at least ``score``. ``single`` keeps the best one, ``all`` keeps every
    candidate with ``score >= min_score``; ``max_objects`` caps either. Nothing above ``min_score``
    is "no target": an empty list. Ties break by larger ``area_m2`` then input order.
    """
    ranked = sorted(enumerate(candidates),
                    key=lambda ic: (-ic[1]["score"], -ic[1].get("area_m2", 0.0), ic[0]))
    kept = [c for _, c in ranked if c["score"] >= min_score]
    limit = 1 if mode == "single" else (max_objects or len(kept))
    if max_objects is not None:
        limit = min(limit, max_objects)
    out = []
    for rank, c in enumerate(kept[:limit], start=1):
        out.append({**c, "rank": rank})
    return out


class SceneSelector:
    """Connected components of the mosaic → scores → selection (``--mode``, ``--max-objects``)."""

    def __init__(self, segmenter, opts, reporter) -> None:
        self.seg = segmenter
        self.opts = opts
        self.rep = reporter

    def select(self, input_path, info, grid, bands, normalizer, acc, expression) -> list[SelectedObject]:
        from rrsis_geo.geo.vectorize import vectorize

        comps = vectorize(acc, grid, self.opts.threshold, min_area_m2=self.opts.min_area,
                          simplify_px=self.opts.simplify)
        cands = [{"geometry": c.geometry, "area_m2": c.area_m2, "local": c.mean_prob,
                  "score": c.mean_prob} for c in comps]
        kept = select_objects(cands, self.opts.mode, self.opts.max_objects, self.opts.min_score)
        return [SelectedObject(geometry=c["geometry"], score=c["score"], area_m2=c["area_m2"],
                               rank=c["rank"], local_score=c["local"]) for c in kept]
