"""Scene-level referring: pick the object(s) a sentence names in the *whole* raster.

FIANet was trained on single chips that always contain the referent, and its spatial words are
relative to the chip. Run tile by tile, every tile has its own "north". This module turns the
stitched tile probabilities into scene-level answers in three documented steps:

0. **Tile sentence** — the tile passes read the sentence without its scene-frame words
   (:func:`tile_expression`: "the blue tennis court in the east of the scene" → "the blue tennis
   court"; "the smallest pond" → "the pond"). A tile is not the scene; told "in the east", the
   model would look in each tile's own east and suppress the referent in most tiles. Step 3
   judges those words on the whole scene. Relational phrases stay with the tiles.
1. **Candidates** — connected components of the blended probability mosaic
   (``prob >= --threshold``), each with its *local score* ``l`` = mean tile probability inside it
   times a completeness factor ``sqrt(min(1, area / A_min))``: a component smaller than the
   smallest plausible referent is a piece of something, not the object, and must not outrank
   one. ``A_min`` comes from the class the sentence names (:func:`referent_min_area`,
   :data:`CLASS_MIN_M2`: 100 m² for a basketball court, 4 m² for a car; :data:`MIN_OBJECT_M2`
   when no class word is found). Specks smaller than :data:`MIN_PIXELS` work-grid pixels are
   ignored.
2. **Global pass** — the whole raster, downsampled so its long side equals the model's input size
   (the frame the model learned its spatial words in), goes through the model once, giving a
   scene-frame probability map ``G``. A component's *global score* ``g`` is the mean of ``G`` over
   its footprint. How much ``g`` counts depends on how visible the object is at overview scale:
   ``v = clip(sqrt(n_overview_pixels) / VISIBLE_SIDE, 0, 1)`` (an object spanning
   :data:`VISIBLE_SIDE` overview pixels is fully judged by the global pass, a car that shrinks to a
   fraction of a pixel is not), and the evidence score is ``s = (1 - W v) l + W v g`` with
   ``W =`` :data:`GLOBAL_WEIGHT`. When the raster fits in about one tile, global and tile passes
   see the same frame and ``v`` is set to 0 (no double counting). ``W`` is small because the
   overview is several times coarser than the resolution a model is trained at: for the demo
   model (trained at one ground resolution) the overview map is weak evidence.
3. **Scene language** — scene-frame words the tile passes cannot resolve: absolute positions
   ("in the north-east of the scene", "on the left", "in the middle") and superlatives ("the
   largest", "the smallest"). Relational uses ("left of the truck", "north of the pond") are left
   to the model, which sees both objects in a tile. Each candidate gets an agreement ``q`` in
   [0, 1] (min-max normalized projection of its centroid on the named direction over all
   candidates, closeness to the centre, or area rank); candidates are ranked by
   ``s * (1 - Q + Q q)`` with ``Q =`` :data:`LANGUAGE_WEIGHT`: the words decide among candidates
   the model supports, the evidence breaks near-ties.

The constants were chosen on generated scenes with seeds 800000+ (``bench/scene.py`` reports on
900000+, never used for tuning).

Selection: ``single`` keeps the best-ranked candidate whose evidence ``s >= --min-score``;
``all`` keeps every such candidate (plural sentences); ``--max-objects`` caps both. No candidate
above ``--min-score`` is the normal "no target" answer. The written ``score`` is ``s``; ``rank``
follows the final ranking.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

#: components smaller than this many work-grid pixels are treated as noise
MIN_PIXELS = 16
#: weight of the global pass for a fully visible object
GLOBAL_WEIGHT = 0.1
#: side (overview pixels) at which an object counts as fully visible in the global pass
VISIBLE_SIDE = 4.0
#: weight of scene-frame language (position words, superlatives) in the ranking
LANGUAGE_WEIGHT = 0.8
#: m²; smaller components are fragments, when the sentence names no class of
#: :data:`CLASS_MIN_M2` (a car, the smallest common referent, is ~4.5 x 1.8 m)
MIN_OBJECT_M2 = 8.0
#: m²; the smallest plausible size of a referent of these classes (conservative: about a third
#: of a standard court, a small house, a compact car). A component smaller than that is a piece
#: of something, whatever its probability.
CLASS_MIN_M2 = {
    "basketball court": 100.0, "tennis court": 100.0, "baseball field": 300.0,
    "ground track field": 1000.0, "stadium": 1000.0, "golf field": 2000.0,
    "airport": 5000.0, "train station": 300.0, "harbor": 300.0,
    "expressway service area": 1000.0, "expressway toll station": 100.0,
    "storage tank": 10.0, "tank": 10.0, "pond": 20.0, "water body": 20.0, "building": 20.0,
    "airplane": 30.0, "ship": 10.0, "bridge": 30.0, "dam": 30.0, "overpass": 30.0,
    "car": 4.0, "vehicle": 4.0, "van": 5.0, "truck": 8.0, "bus": 15.0, "trailer": 6.0,
}
#: rasters whose long side is at most this many tiles are "one frame": no separate global weight
ONE_FRAME_TILES = 1.25

_DIRS = {
    "north": (0.0, -1.0), "northern": (0.0, -1.0), "upper": (0.0, -1.0), "top": (0.0, -1.0),
    "south": (0.0, 1.0), "southern": (0.0, 1.0), "lower": (0.0, 1.0), "bottom": (0.0, 1.0),
    "east": (1.0, 0.0), "eastern": (1.0, 0.0), "right": (1.0, 0.0),
    "west": (-1.0, 0.0), "western": (-1.0, 0.0), "left": (-1.0, 0.0),
}
_CENTRE = {"middle", "centre", "center", "central"}
_LARGEST = {"largest", "biggest", "widest", "longest"}
_SMALLEST = {"smallest", "tiniest", "shortest"}
_FRAME_NOUNS = {"scene", "image", "picture", "map", "area", "raster", "photo", "mosaic", "view"}


def _alternation(words) -> str:
    """``(?:a|b|...)`` of literal words, longest first."""
    return "(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + ")"


_CLASS_RE = re.compile(r"\b(" + _alternation(CLASS_MIN_M2) + r")(?:e?s)?\b")


def referent_min_area(expression: str) -> float:
    """Smallest plausible area (m²) of the referent: :data:`CLASS_MIN_M2` of the first class
    word in the sentence (the referent comes before any anchor: "the car near the building"),
    else :data:`MIN_OBJECT_M2`.

    >>> referent_min_area("the blue basketball court near the pond")
    100.0
    >>> referent_min_area("the red thing")
    8.0
    """
    m = _CLASS_RE.search(expression.lower())
    return CLASS_MIN_M2[m.group(1)] if m else MIN_OBJECT_M2


@dataclass
class SceneQuery:
    """Scene-frame language found in a sentence."""

    direction: tuple[float, float] | None = None  # (dx, dy), y down (north = -1)
    centre: bool = False
    superlative: str | None = None  # "largest" | "smallest"
    words: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.direction is None and not self.centre and self.superlative is None


def parse_scene_query(expression: str) -> SceneQuery:
    """Absolute position words and superlatives of a sentence (relational uses are skipped).

    >>> parse_scene_query("the tank in the north-east of the scene").direction
    (0.7071067811865475, -0.7071067811865475)
    >>> parse_scene_query("the car left of the truck").empty
    True
    """
    words = re.findall(r"[a-z]+", expression.lower())
    q = SceneQuery()
    dx = dy = 0.0
    for i, w in enumerate(words):
        nxt = words[i + 1:i + 4]
        relational = False
        if nxt[:1] == ["of"]:
            rest = [x for x in nxt[1:] if x != "the"]
            relational = not (rest and rest[0] in _FRAME_NOUNS)
        if w in _DIRS and not relational:
            if w in ("left", "right") and i > 0 and words[i - 1] == "the" and nxt[:1] == ["of"]:
                continue  # "to the left of the X"
            ddx, ddy = _DIRS[w]
            dx, dy = dx + ddx, dy + ddy
            q.words.append(w)
        elif w in _CENTRE and not relational:
            q.centre = True
            q.words.append(w)
        elif w in _LARGEST:
            q.superlative = "largest"
            q.words.append(w)
        elif w in _SMALLEST:
            q.superlative = "smallest"
            q.words.append(w)
    n = math.hypot(dx, dy)
    if n > 0:
        q.direction = (dx / n, dy / n)
    return q


# the words parse_scene_query reads as absolute positions, plus "far" ("in the far north")
_DIR_WORD = _alternation(set(_DIRS) | _CENTRE | {"far"})
_PART_WORD = _alternation(("part", "side", "corner", "edge", "half", "area", "region", "portion"))
_FRAME_WORD = _alternation(_FRAME_NOUNS)
#: an absolute position phrase: "(located) in the north-east (part) (of the scene)"
_POSITION_PHRASE = re.compile(
    r"\b(?:(?:located|situated|lying|which\s+is|that\s+is|that's)\s+)?"
    r"(?:in|at|on|to|towards?)\s+the\s+" + _DIR_WORD + r"(?:[\s-]+" + _DIR_WORD + r")*"
    r"(?:\s+" + _PART_WORD + r")?"
    r"(?:\s+of\s+the\s+" + _FRAME_WORD + r")?\b"
    r"(?![\s-]+(?:of|" + _DIR_WORD + "|" + _PART_WORD + r")\b)")
#: "in the scene", "of the image": the frame itself
_FRAME_PHRASE = re.compile(r"\b(?:in|of|within|across)\s+the\s+(?:whole\s+|entire\s+)?"
                           + _FRAME_WORD + r"\b")
_SUPERLATIVE = _alternation(_LARGEST | _SMALLEST)
_SUPERLATIVE_PHRASE = re.compile(r"\b(?:(?:which|that)\s+is\s+the\s+" + _SUPERLATIVE
                                 + r"(?:\s+one)?|" + _SUPERLATIVE + r")\b")


def tile_expression(expression: str) -> str:
    """The sentence the *tile* passes see: scene-frame words removed.

    A tile is not the scene: "in the north-east of the scene" and "the largest" describe where
    and how big the referent is among *all* candidates, which only :func:`language_agreement`
    can judge. Given to a tile, the model would read them in its chip frame (each tile its own
    north-east, its own largest) and suppress the referent in most tiles. Relational phrases
    ("left of the truck") stay: both objects are in the same tile. If nothing but an article
    would remain, the sentence is returned unchanged.

    >>> tile_expression("the blue tennis court located in the east of the scene")
    'the blue tennis court'
    >>> tile_expression("the storage tank that is the biggest")
    'the storage tank'
    >>> tile_expression("the car to the left of the truck")
    'the car to the left of the truck'
    """
    text = " ".join(expression.split())
    out = _POSITION_PHRASE.sub(" ", text)
    out = _FRAME_PHRASE.sub(" ", out)
    out = _SUPERLATIVE_PHRASE.sub(" ", out)
    out = " ".join(out.split()).strip(" ,")
    if not re.sub(r"\b(?:the|a|an)\b", "", out).strip():
        return text
    return out


def language_agreement(query: SceneQuery, centroids: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Agreement ``q`` in [0, 1] of each candidate with the scene-frame words.

    Args:
        centroids: [K, 2] candidate centroids in scene-normalized coordinates (x right, y down,
            both in [0, 1]).
        areas: [K] candidate areas (any unit).
    """
    k = len(areas)
    if k == 0 or query.empty:
        return np.ones(k)
    parts = []
    if query.direction is not None:
        proj = centroids @ np.asarray(query.direction)
        parts.append(_minmax(proj))
    if query.centre:
        d = np.hypot(centroids[:, 0] - 0.5, centroids[:, 1] - 0.5)
        parts.append(_minmax(-d))
    if query.superlative is not None:
        a = np.log(np.maximum(areas, 1e-9))
        parts.append(_minmax(a if query.superlative == "largest" else -a))
    return np.mean(parts, axis=0)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi - lo < 1e-12:
        return np.ones_like(x, dtype=float)
    return (x - lo) / (hi - lo)


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

    ``candidates``: dicts with ``score`` (evidence, 0–1) and optionally ``rank_key`` (defaults to
    ``score``) and ``area_m2``. Candidates with ``score < min_score`` are dropped; ``single`` keeps
    the best by ``rank_key``, ``all`` keeps every remaining one; ``max_objects`` caps either. An
    empty result is "no target". Ties break by larger area, then input order.
    """
    kept = [(i, c) for i, c in enumerate(candidates) if c["score"] >= min_score]
    kept.sort(key=lambda ic: (-ic[1].get("rank_key", ic[1]["score"]),
                              -ic[1].get("area_m2", 0.0), ic[0]))
    limit = selection_limit(mode, max_objects, len(kept))
    return [{**c, "rank": r} for r, (_, c) in enumerate(kept[:limit], start=1)]


def selection_limit(mode: str, max_objects: int | None, available: int) -> int:
    """How many of ``available`` ranked candidates ``--mode`` / ``--max-objects`` keep."""
    limit = 1 if mode == "single" else available
    return limit if max_objects is None else min(limit, max_objects)


class SceneSelector:
    """Candidates from the mosaic, a global pass, scene-frame language, then selection."""

    def __init__(self, segmenter, opts, reporter) -> None:
        self.seg = segmenter
        self.opts = opts
        self.rep = reporter

    # -- global pass ----------------------------------------------------------------------------
    def overview_shape(self, info) -> tuple[int, int]:
        """(rows, cols) of the overview: the raster's long side scaled to the model input size."""
        size = int(self.seg.input_size)
        scale = min(1.0, size / max(info.width, info.height))
        return max(8, round(info.height * scale)), max(8, round(info.width * scale))

    def read_overview(self, input_path, info, bands, normalizer):
        """The whole raster at overview size, normalized: (image [3, oh, ow], valid [oh, ow]).

        No model involved: the pipeline's background reader calls this once the tiles are read,
        so the decode overlaps the last forwards.
        """
        import rasterio
        from rasterio.enums import Resampling

        from rrsis_geo.geo.raster import bounded_gdal_cache

        oh, ow = self.overview_shape(info)
        with bounded_gdal_cache(), rasterio.open(input_path) as src:
            data = src.read(list(bands), out_shape=(len(bands), oh, ow),
                            resampling=Resampling.average).astype(np.float32)
            valid = src.dataset_mask(out_shape=(oh, ow), resampling=Resampling.nearest) > 0
        img = normalizer.apply(data)
        if valid.any() and not valid.all():
            img[:, ~valid] = img[:, valid].mean(axis=1)[:, None]
        return img, valid

    def global_probability(self, input_path, info, grid, bands, normalizer, overview=None):
        """Model probability on the whole raster downsampled to the model's input size.

        Args:
            overview: ``read_overview``'s result when already read.

        Returns:
            (prob [oh, ow] float32, (overview/grid x scale, y scale)).
        """
        img, valid = overview or self.read_overview(input_path, info, bands, normalizer)
        oh, ow = valid.shape
        prob = self.seg.predict(img[None], self.seg.encode(self._expression))[0]
        prob[~valid] = 0.0
        return prob, (ow / grid.width, oh / grid.height)

    def one_frame(self, grid) -> bool:
        """The raster is about one tile: tile, overview and scene share one frame."""
        tile = int(self.opts.tile_size or self.seg.input_size)
        return max(grid.width, grid.height) <= ONE_FRAME_TILES * tile

    def needs_global_pass(self, grid) -> bool:
        """A global pass helps unless disabled or the raster is about one tile ("one frame")."""
        return bool(self.opts.global_pass) and not self.one_frame(grid)

    def tile_expression(self, grid, expression: str) -> str:
        """What the tile passes read: :func:`tile_expression`, unless the raster is one frame
        (then the model's own frame is the scene's and the sentence is kept whole)."""
        if self.one_frame(grid):
            return " ".join(expression.split())
        return tile_expression(expression)

    def select(self, input_path, info, grid, bands, normalizer, acc, expression, overview=None):
        """Scored, ranked, selected objects (``SelectedObject``, geometry in the grid CRS).

        ``overview``: ``read_overview``'s result if the caller read it already.
        """
        from rrsis_geo.geo.vectorize import find_components, pixel_areas_m2, polygonize

        self._expression = expression
        opts = self.opts

        # 2. global pass (first: candidates record the overview pixels they touch)
        gprob = None
        if self.needs_global_pass(grid):
            gprob, (sx, sy) = self.global_probability(input_path, info, grid, bands, normalizer,
                                                      overview)

        # 1. candidates: raster statistics only; polygons are built for the kept objects alone
        comps = find_components(acc, grid, opts.threshold, min_pixels=MIN_PIXELS,
                                overview_shape=None if gprob is None else gprob.shape)
        centroids = np.array([c.centroid_px for c in comps]).reshape(-1, 2)
        areas = np.array([c.pixel_count for c in comps]) * pixel_areas_m2(
            grid, centroids[:, 0], centroids[:, 1])
        if opts.min_area > 0:
            comps = [c for c, a in zip(comps, areas) if a >= opts.min_area]
            areas = areas[areas >= opts.min_area]
        if not comps:
            return []

        gscores: list[float | None] = [None] * len(comps)
        vis = np.zeros(len(comps))
        if gprob is not None:
            gflat = gprob.ravel()
            for i, c in enumerate(comps):
                gscores[i] = float(gflat[c.overview_pixels].mean())
                vis[i] = min(1.0, math.sqrt(c.pixel_count * sx * sy) / VISIBLE_SIDE)
        mean_prob = np.array([c.mean_prob for c in comps])
        local = mean_prob * np.sqrt(np.minimum(1.0, areas / referent_min_area(expression)))
        g = np.array([x if x is not None else 0.0 for x in gscores])
        w = GLOBAL_WEIGHT * vis
        evidence = (1 - w) * local + w * g

        # 3. scene-frame language
        query = parse_scene_query(expression)
        rows = np.array([(c.bbox_px[0] + c.bbox_px[2]) / 2 for c in comps])
        cols = np.array([(c.bbox_px[1] + c.bbox_px[3]) / 2 for c in comps])
        cent = np.stack([cols / max(grid.width, 1), rows / max(grid.height, 1)], axis=1)
        # language only ranks candidates that the model itself supports
        supported = evidence >= opts.min_score
        agree = np.ones(len(comps))
        if supported.sum() > 1:
            agree[supported] = language_agreement(query, cent[supported], areas[supported])
        rank_key = evidence * (1 - LANGUAGE_WEIGHT + LANGUAGE_WEIGHT * agree)
        if not query.empty:
            self.rep.message(f"scene-frame words: {', '.join(query.words)}")

        cands = [{"i": i, "score": float(evidence[i]), "rank_key": float(rank_key[i]),
                  "area_m2": float(areas[i])} for i in range(len(comps))]
        ranked = select_objects(cands, "all", None, opts.min_score)
        limit = selection_limit(opts.mode, opts.max_objects, len(ranked))
        out: list[SelectedObject] = []
        for c in ranked:
            if len(out) >= limit:
                break
            geom, area = polygonize(acc, grid, opts.threshold, comps[c["i"]],
                                    simplify_px=opts.simplify)
            if geom.is_empty or area < opts.min_area:
                continue  # simplification can shrink an object below --min-area
            out.append(SelectedObject(geometry=geom, score=c["score"], area_m2=area,
                                      rank=len(out) + 1, local_score=float(local[c["i"]]),
                                      global_score=gscores[c["i"]]))
        return out
