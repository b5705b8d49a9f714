"""Scene-level referring: pick the object(s) a sentence names in the *whole* raster.

FIANet was trained on single chips that always contain the referent, and its spatial words are
relative to the chip. Run tile by tile, every tile has its own "north". This module turns the
stitched tile probabilities into scene-level answers in three documented steps. The words are
read by :mod:`rrsis_geo.text.scene_words`, the scores computed by :mod:`rrsis_geo.inference.scoring`;
this module reads the raster and runs the model for them (:class:`SceneSelector`).

0. **Tile sentence** — the tile passes read the sentence without its scene-frame words
   (:func:`~rrsis_geo.text.scene_words.tile_expression`: "the blue tennis court in the east of the scene" → "the blue tennis
   court"; "the smallest pond" → "the pond"). A tile is not the scene; told "in the east", the
   model would look in each tile's own east and suppress the referent in most tiles. Step 3
   judges those words on the whole scene. A relational phrase the class check judges (step 2b)
   is removed too (:meth:`SceneSelector.tile_expression`); any other relational phrase stays with
   the tiles.
1. **Candidates** — connected components of the blended probability mosaic
   (``prob >= --threshold``), each with its *local score* ``l`` = mean tile probability inside it
   times a completeness factor ``sqrt(min(1, area / A_min))``: a component smaller than the
   smallest plausible referent is a piece of something, not the object, and must not outrank
   one (:func:`~rrsis_geo.inference.scoring.evidence_scores`). ``A_min`` comes from the class the
   sentence names (:func:`~rrsis_geo.text.scene_words.referent_min_area`,
   :data:`~rrsis_geo.text.scene_words.CLASS_MIN_M2`: 100 m² for a basketball court, 4 m² for a car;
   :data:`~rrsis_geo.text.scene_words.MIN_OBJECT_M2` when no class word is found). Specks smaller than :data:`MIN_PIXELS` work-grid pixels are
   ignored.
1b. **A class the model never learned** — a model whose metadata lists the classes it was
   trained to find (``trained_classes``, written by ``rrsis-geo train``) answers "no target",
   and says so, when the sentence names a class of its list outside them
   (:meth:`SceneSelector.untrained_class`; a wider or narrower class counts: "the vehicle" for
   a model that learned cars). What it paints for "the bridge" after training on buildings and
   roads only is a look-alike. Part of the class check: ``--no-class-check`` lets it through.
   When every sentence of a run is refused so and no ``--prob-raster`` is asked for, the
   pipeline answers before the tile pass (:func:`~rrsis_geo.inference.pipeline.segment_raster`).
2. **Global pass** — the whole raster, downsampled so its long side equals the model's input size
   (the frame the model learned its spatial words in), goes through the model once, giving a
   scene-frame probability map ``G``. A component's *global score* ``g`` is the mean of ``G`` over
   its footprint. How much ``g`` counts depends on how visible the object is at overview scale:
   ``v = clip(sqrt(n_overview_pixels) / VISIBLE_SIDE, 0, 1)`` (an object spanning
   :data:`~rrsis_geo.inference.scoring.VISIBLE_SIDE` overview pixels is fully judged by the global pass, a car that shrinks to a
   fraction of a pixel is not), and the evidence score is ``s = (1 - W v) l + W v g`` with
   ``W =`` :data:`~rrsis_geo.inference.scoring.GLOBAL_WEIGHT`. When the raster fits in about one tile, global and tile passes
   see the same frame and ``v`` is set to 0 (no double counting). ``W`` is small because the
   overview is several times coarser than the resolution a model is trained at: for the demo
   model (trained at one ground resolution) the overview map is weak evidence.
2b. **Class check** — a tile that does not contain the named class still paints its nearest
   look-alike (a building for "the storage tank", a car for "the truck", a blue roof for "the
   blue tennis court"): the model was trained on chips that mostly contain the referent, and a
   large scene's tiles mostly do not. When the sentence names a class of the model's list
   (:func:`named_class`), the best candidates (in ``--mode single`` the
   :data:`CLASS_CHECK_TOP` best by the ranking of step 3 without the relation, in ``--mode all``
   every one with ``s >= --min-score``) are seen once more, each in a window centred on it
   (:data:`CHECK_WINDOW`; in full context, not cut by a tile border), with class prompts
   "the <named class>" and "the <rival>" (in ``--mode all`` in the plural, "the trees":
   a window around one crown of a stand holds several, :func:`check_prompts`). The rivals are the other classes of the model
   except wider and narrower ones (:func:`rival_classes`: a car is a vehicle, not a truck);
   a *screen* runs all of them on the best candidate (a :data:`CHECK_SCREEN_WINDOW` window),
   and the candidates then meet the :data:`CHECK_RIVALS` the model took that candidate for
   most. The margin ``m`` = mean logit of the named prompt minus the best rival's that was
   run, over the candidate's pixels, scales the evidence: ``s <- s * sigmoid(m + 1)``
   (:func:`class_factor`; a candidate the model finds as much of the named class as of any
   other keeps 73 %). Vehicle kinds differ from above mainly by size and shape, and there ``m``
   also holds a **size and a shape margin** (:meth:`SceneSelector.vehicle_margins`, each at
   most 0): a candidate smaller than the named kind's typical footprint and closer in size to a
   smaller kind (:data:`~rrsis_geo.text.scene_words.VEHICLE_TYPICAL_M2`: a car found for "the
   truck"), or less elongated than the kind and closer to a less elongated kind or a square
   (:data:`~rrsis_geo.text.scene_words.VEHICLE_ELONGATION`: a small building found for "the
   truck"), loses, whatever the model says. A model that scores two look-alikes alike (a
   tennis and a basketball court: "the tennis court" and "the basketball court" within a
   fraction of a logit on either) cannot refuse one for the other; weights that come with an
   **object classifier** (:mod:`rrsis_geo.model.objclass`, ``X.objclass.safetensors`` beside
   ``X.safetensors``, ``rrsis-geo train-objclass``) add its margin too
   (:meth:`SceneSelector.objclass_margins`, at most 0): the log-probability it gives the named
   class minus that of the likeliest rival or "other", for the candidate's mask in a window
   centred on it. The cost is bounded by ``--check-budget``
   (tile-sized windows; ``auto``, the default, scales with the raster's tiles:
   :func:`auto_check_budget`; a candidate the budget does not reach is not considered) and
   cut by early exits: a
   candidate stops meeting rivals once it cannot be selected, and is skipped when it cannot
   beat one already checked (:meth:`SceneSelector.class_margins`). Candidates outside the
   checked set are not considered in ``--mode single``; in ``--mode all`` they take the median
   model margin of the checked ones (look-alikes of the best candidates) and their own size
   and shape margins. ``--no-class-check`` switches it off.
   The same windows judge a **relational phrase** whose anchor is a class of the model ("the
   truck near the tennis court", "the car left of the bus"; :func:`parse_relation`): anchor
   pixels are those where the anchor's prompt is positive and beats every other prompt, and
   :func:`relation_agreement` scores the candidate (no anchor in its window: 0; "near":
   ``exp(-gap / (T/4))``; a direction: the sigmoid of the centroids' offset along it). A tile
   sees only its own crop: the tiles read the sentence without the relation (step 0).
3. **Scene language** — scene-frame words the tile passes cannot resolve: absolute positions
   ("in the north-east of the scene", "on the left", "in the middle") and superlatives ("the
   largest", "the smallest"). Relational uses ("left of the truck", "north of the pond") are not
   positions. Each candidate gets an agreement ``q`` in [0, 1] (min-max normalized projection
   of its centroid on the named direction over all candidates, closeness to the centre, or area
   rank; the relation agreement of step 2b, when there is one, counts as one more such word);
   candidates are ranked by ``s * (1 - Q + Q q)`` with ``Q =`` :data:`LANGUAGE_WEIGHT`: the
   words decide among candidates the model supports, the evidence breaks near-ties
   (:func:`~rrsis_geo.inference.scoring.ranking_key`).

The constants were chosen on generated scenes with seeds 800000+ (``bench/scene.py`` reports on
900000+, never used for tuning).

Selection: ``single`` keeps the best-ranked candidate whose evidence ``s >= --min-score``;
``all`` keeps every such candidate (plural sentences); ``--max-objects`` caps both. No candidate
above ``--min-score`` is the normal "no target" answer. The written ``score`` is ``s``; ``rank``
follows the final ranking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from rrsis_geo.inference.scoring import (LANGUAGE_WEIGHT, MIN_PIXELS, SHAPE_MAX_AREA_RATIO,
                                         SHAPE_MIN_NATIVE_PX, check_margin, class_factor,
                                         evidence_scores, no_target_message, ranking_key,
                                         relation_agreement, select_objects, selection_limit,
                                         shape_margin, size_margin, visibility)
from rrsis_geo.text.scene_words import (VEHICLE_TYPICAL_M2, Relation, check_prompts,
                                        class_was_trained, named_class, parse_relation,
                                        parse_scene_query, referent_min_area, rival_classes,
                                        tile_expression)

#: rasters whose long side is at most this many tiles are "one frame": no separate global weight
ONE_FRAME_TILES = 1.25
#: class check: in ``--mode single`` the best candidates (by evidence and scene-frame words)
#: that are checked; the others are not considered
CLASS_CHECK_TOP = 12
#: class check: candidates screened with every class prompt (the best ones by the ranking);
#: the rivals that score highest on them are the ones the other candidates are checked against
CHECK_SCREEN = 1
#: class check: side of the screen's window (work-grid pixels; a larger candidate is screened
#: on the part of it this window centred on it holds)
CHECK_SCREEN_WINDOW = 96
#: class check: rivals per candidate after the screen (strongest first)
CHECK_RIVALS = 5
#: class check: side of the window around a candidate, in work-grid pixels (the tile when
#: smaller; grown for a large candidate up to the tile)
CHECK_WINDOW = 192
#: class check: one forward holds one window with up to this many tile batches' worth of prompt
#: pixels (prompts × window² ≤ N × --batch-size × tile²) on a CPU, and one on a GPU (whose batch is
#: sized to its free memory). A CPU forward has a fixed cost that small forwards pay again and
#: again: with the demo model the screen's 34 prompts at 96² went from 9 forwards (~0.27 s) to one
#: (~0.15 s) and a candidate's 6 prompts from two forwards (4 + 2, ~0.12 s) to one (~0.09 s); the
#: whole check of the 2048² bench scene measured ~25 % faster (bench/pipeline.py (c))
CHECK_CPU_FORWARD_BATCHES = 3
#: class check: candidates per forward of the object classifier
OBJCLASS_BATCH = 32
#: ``--check-budget auto`` (:func:`auto_check_budget`): CHECK_BUDGET_SHARE of the raster's
#: tiles, at least CHECK_BUDGET_MIN windows of the check's own size (:data:`CHECK_WINDOW`, in
#: tile-equivalents), at most CHECK_BUDGET_MAX tile-sized windows
CHECK_BUDGET_SHARE = 0.25
CHECK_BUDGET_MIN = 64
CHECK_BUDGET_MAX = 64


def auto_check_budget(n_tiles: int, tile_size: int) -> float:
    """``--check-budget auto``: the class check's budget (tile-sized windows) for a raster of
    ``n_tiles`` tiles of ``tile_size`` pixels: a quarter of the tiles, at least 64 windows of
    :data:`CHECK_WINDOW` (the candidates' own window: the same number of candidates and prompts
    whatever the tile size), at most 64 tiles. With the demo model's 192² tiles that is 64 on
    any raster; with the official layout's 480² tiles 10.24 up to 41 tiles, a quarter of them
    above (2048²: 36 tiles → 10.24), 64 from 256 tiles."""
    tile = max(1, int(tile_size))
    floor = CHECK_BUDGET_MIN * (min(tile, CHECK_WINDOW) / tile) ** 2
    return float(min(CHECK_BUDGET_MAX, max(floor, CHECK_BUDGET_SHARE * max(0, int(n_tiles)))))


@dataclass
class SelectedObject:
    geometry: BaseGeometry
    score: float
    area_m2: float
    rank: int
    local_score: float
    global_score: float | None = None


@dataclass(frozen=True)
class SceneSource:
    """The raster a :class:`SceneSelector` reads, and the probability mosaic of one sentence.

    Attributes:
        input_path: the raster file (the path the tiles were read from).
        info: its ``RasterInfo`` (:mod:`rrsis_geo.geo.raster`).
        grid: the ``WorkGrid`` the tiles and the mosaic are on (:mod:`rrsis_geo.geo.workgrid`).
        bands: the 1-based band indexes read as RGB.
        normalizer: the ``Normalizer`` applied to every read (:mod:`rrsis_geo.geo.radiometry`).
        acc: the sentence's blended probability mosaic (``geo.stitch.ProbAccumulator`` or an
            object with its ``read(rows, cols)``); None for the reads that need only the raster
            (:meth:`SceneSelector.read_overview`).
    """

    input_path: Any
    info: Any
    grid: Any
    bands: Any
    normalizer: Any
    acc: Any = None


class SceneSelector:
    """Candidates from the mosaic, a global pass, scene-frame language, then selection."""

    def __init__(self, segmenter, opts, reporter, n_tiles: int = 0) -> None:
        self.seg = segmenter
        self.opts = opts
        self.rep = reporter
        #: the raster's planned tiles (``--check-budget auto`` scales with them)
        self.n_tiles = int(n_tiles)
        #: images the class check sent through the model, and the seconds it took
        self.check_images = 0
        self.check_seconds = 0.0
        #: the same images in tile-sized windows (a smaller window counts for its share of a
        #: tile's pixels): what ``--check-budget`` caps
        self.check_windows = 0.0

    # -- global pass ----------------------------------------------------------------------------
    def overview_shape(self, info) -> tuple[int, int]:
        """(rows, cols) of the overview: the raster's long side scaled to the model input size."""
        size = int(self.seg.input_size)
        scale = min(1.0, size / max(info.width, info.height))
        return max(8, round(info.height * scale)), max(8, round(info.width * scale))

    def read_overview(self, source: SceneSource):
        """The whole raster at overview size, normalized: (image [3, oh, ow], valid [oh, ow]).

        No model involved: the pipeline's background reader calls this once the tiles are read,
        so the decode overlaps the last forwards.
        """
        import rasterio
        from rasterio.enums import Resampling

        from rrsis_geo.geo.raster import bounded_gdal_cache

        bands = source.bands
        oh, ow = self.overview_shape(source.info)
        with bounded_gdal_cache(), rasterio.open(source.input_path) as src:
            data = src.read(list(bands), out_shape=(len(bands), oh, ow),
                            resampling=Resampling.average).astype(np.float32)
            valid = src.dataset_mask(out_shape=(oh, ow), resampling=Resampling.nearest) > 0
        valid &= np.isfinite(data).all(axis=0)  # NaN/inf pixels are nodata, never averaged in
        img = source.normalizer.apply(data)
        if valid.any() and not valid.all():
            img[:, ~valid] = img[:, valid].mean(axis=1)[:, None]
        return img, valid

    def global_probability(self, source: SceneSource, expression: str, overview=None):
        """Model probability of ``expression`` on the whole raster downsampled to the model's
        input size.

        Args:
            overview: ``read_overview``'s result when already read.

        Returns:
            (prob [oh, ow] float32, (overview/grid x scale, y scale)).
        """
        img, valid = overview or self.read_overview(source)
        oh, ow = valid.shape
        prob = self.seg.predict(img[None], self.seg.encode(expression))[0]
        prob[~valid] = 0.0
        return prob, (ow / source.grid.width, oh / source.grid.height)

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
        text = tile_expression(expression)
        relation = self.judged_relation(text)
        return relation.referent_text if relation is not None else text

    def model_classes(self) -> tuple[str, ...]:
        """The model's class phrases (its metadata's list, or the named list it was trained
        with; "refsegrs" when unsaid, as for text decoupling); empty without metadata."""
        from rrsis_geo.errors import UsageError
        from rrsis_geo.text.classes import resolve_classes

        meta = getattr(self.seg, "meta", None)
        if not meta:
            return ()
        try:
            return resolve_classes(meta.get("classes", "refsegrs"))
        except UsageError:
            return ()

    def untrained_class(self, expression: str) -> str | None:
        """The class the sentence names when the model's metadata lists the classes it was
        trained to find (``trained_classes``) and that class is not among them
        (:func:`~rrsis_geo.text.scene_words.class_was_trained`); else None. Whatever such a model
        paints for it is a look-alike of something it knows."""
        trained = (getattr(self.seg, "meta", None) or {}).get("trained_classes")
        if not trained:
            return None
        named = named_class(expression, self.model_classes())
        if named is None or class_was_trained(named, trained):
            return None
        return named

    def refuse_untrained(self, expression: str) -> bool:
        """With the class check on, log why and return True when the sentence names a class
        the model was never trained to find (:meth:`untrained_class`)."""
        untrained = self.untrained_class(expression) if self.opts.class_check else None
        if untrained is None:
            return False
        trained = ", ".join(self.seg.meta["trained_classes"])
        self.rep.message(f"no target: this model was not trained to find a {untrained} "
                         f"(it learned: {trained}); --no-class-check lets its look-alikes "
                         "through")
        return True

    def judged_relation(self, expression: str) -> Relation | None:
        """The relational phrase the class check will judge at scene level (its anchor is a
        class of the model, and not the referent's own), or None. Tiles then read the sentence
        without it: a tile that shows the referent but not its anchor would suppress it."""
        if not self.opts.class_check:
            return None
        classes = self.model_classes()
        named = named_class(expression, classes)
        if named is None:
            return None
        relation = parse_relation(expression, classes)
        if (relation is None or relation.anchor == named or not relation.referent_text
                or relation.anchor not in rival_classes(named, classes)):
            return None
        return relation

    # -- class check -----------------------------------------------------------------------------
    def check_budget(self) -> float:
        """The class check's budget in tile-sized windows: ``--check-budget N``, or for
        ``auto`` :func:`auto_check_budget` of the raster's tiles."""
        budget = self.opts.check_budget
        if str(budget).strip().lower() == "auto":
            return auto_check_budget(self.n_tiles,
                                     int(self.opts.tile_size or self.seg.input_size))
        return float(budget)

    def check_window(self, cand, side: int = 0) -> int:
        """Side (work-grid pixels) of the class check's window around a candidate: ``side``
        (default :data:`CHECK_WINDOW`; the tile when smaller), grown to hold a larger candidate
        with a margin as wide as itself, up to the tile."""
        tile = int(self.opts.tile_size or self.seg.input_size)
        r0, c0, r1, c1 = cand.bbox_px
        need = -(-2 * max(r1 - r0, c1 - c0) // 32) * 32
        return min(tile, max(side or CHECK_WINDOW, need))

    def class_margins(self, source: SceneSource, comps, prompts: list[str], relation: tuple[int, Relation] | None = None,
                      evidence: np.ndarray | None = None, floor: float | None = None,
                      prior: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean logit margin (referent minus background) of class prompts over each candidate,
        seen in a window of the work grid centred on it (:meth:`check_window`; the candidate in
        full context, not cut by a tile border), within ``--check-budget``.

        Args:
            comps: the candidates, best first.
            prompts: "the <named class>" first, then the rivals.
            relation: (anchor prompt index, Relation) to judge in the same windows.
            evidence: the candidates' evidence, same order as ``comps``; enables the early
                exits.
            floor: with ``evidence``, in ``--mode single``: the smallest factor the ranking's
                language term can apply (1 without scene-frame words or relation, else
                ``1 - LANGUAGE_WEIGHT``). A candidate whose evidence times the class factor of
                its margin so far is below ``--min-score``, or below the floor-scaled checked
                score of a selectable candidate before it, cannot be selected: its remaining
                rivals (the margin only drops with more rivals), or its window, are skipped.
            prior: with ``evidence``, a margin per candidate added to the model's in those
                exits (the size and shape margins, :meth:`vehicle_margins`); the
                returned margins are the model's alone.

        Returns:
            ([K, P] margins, NaN where a prompt was not run; a row of NaN for a candidate the
            budget did not reach), relation agreements [K] or None.

        First the screen: every prompt on the first :data:`CHECK_SCREEN` candidate(s), in a
        smaller window (:data:`CHECK_SCREEN_WINDOW`), ranks the rivals by how much the model
        takes that candidate for them. Then each candidate, best first, sees the named prompt,
        the anchor of a relation and the :data:`CHECK_RIVALS` highest-ranked rivals, strongest
        first, in forwards of as many prompts as :data:`CHECK_CPU_FORWARD_BATCHES` allows
        (the window's pixels against ``--batch-size`` tiles), stopping early after a forward
        once the candidate is out (see ``floor``). Each prompt in a window costs
        ``(side / tile)²`` of the budget; a candidate the budget cannot pay for in full is not
        considered (the first one gets what is left).
        """
        import rasterio
        import torch

        from rrsis_geo.geo.raster import bounded_gdal_cache
        from rrsis_geo.model.features import index_features

        tile_size = int(self.opts.tile_size or self.seg.input_size)
        budget = self.check_budget()
        feats = self.seg.encode_many(prompts)
        batch = max(1, self.seg.resolve_batch_size(self.opts.batch_size, tile_size))
        if self.seg.device.type == "cpu":
            batch *= CHECK_CPU_FORWARD_BATCHES
        n_p = len(prompts)
        out = np.full((len(comps), n_p), np.nan)
        rel = None if relation is None else np.zeros(len(comps))
        anchor = None if relation is None else relation[0]
        rivals: list[int] = list(range(1, n_p))
        used = 0.0
        min_score = float(self.opts.min_score)
        best = [0.0]  # highest floor-scaled checked score of a selectable candidate so far
        extra = np.zeros(len(comps)) if prior is None else np.asarray(prior, dtype=np.float64)

        def out_of_reach(k: int, margin: float) -> bool:
            if evidence is None:
                return False
            top = evidence[k] * float(class_factor(np.array([margin + extra[k]]))[0])
            return top < min_score or (floor is not None and top < best[0])

        def window(src, c, side):
            return self.candidate_window(src, source, c, side)

        def run(img, wanted, maps):
            """Yields after each forward of the prompts of ``wanted``, as many per forward as
            :data:`CHECK_CPU_FORWARD_BATCHES` allows."""
            nonlocal used
            unit = (img.shape[-1] / tile_size) ** 2
            chunk = max(1, int(batch / unit + 1e-9))
            for s0 in range(0, len(wanted), chunk):
                part = wanted[s0:s0 + chunk]
                maps[part] = self.seg.margins_of_one_image(
                    img, index_features(feats, torch.tensor(part)))
                used += len(part) * unit
                self.check_images += len(part)
                self.check_windows += len(part) * unit
                self.rep.advance(len(part))
                yield part

        with bounded_gdal_cache(), rasterio.open(source.input_path) as src:
            # the screen: every prompt on the best candidate(s), in a smaller window (it only
            # ranks the rivals; the candidates themselves are judged below)
            screen = comps[:CHECK_SCREEN]
            seen = np.full((len(screen), n_p), -np.inf)
            for k, c in enumerate(screen):
                # a window of CHECK_SCREEN_WINDOW whatever the candidate's size (a large one is
                # screened on its central part); grown only if that part holds none of it
                img, mask = window(src, c, min(tile_size, CHECK_SCREEN_WINDOW))
                if not mask.any():
                    img, mask = window(src, c, self.check_window(c, CHECK_SCREEN_WINDOW))
                side = img.shape[-1]
                fits = int((budget - used) / (side / tile_size) ** 2 + 1e-9)
                maps = np.full((n_p, side, side), -np.inf, np.float32)
                for part in run(img, list(range(n_p))[:max(0, fits)], maps):
                    if mask.any():
                        seen[k, part] = maps[part][:, mask].mean(axis=1)
            if len(seen):
                best_seen = seen[:, 1:].max(axis=0)
                rivals = [int(j) + 1 for j in np.argsort(-best_seen, kind="stable")
                          if np.isfinite(best_seen[j])] or rivals
            for k, c in enumerate(comps):
                if out_of_reach(k, np.inf):
                    continue  # cannot beat a candidate already checked
                side = self.check_window(c)
                unit = (side / tile_size) ** 2
                wanted = [0] + ([anchor] if anchor is not None else []) + [
                    j for j in rivals if j != anchor][:CHECK_RIVALS]
                fits = int((budget - used) / unit + 1e-9)
                if fits < len(wanted):
                    if k > 0 or fits < 1:
                        break  # the budget is spent: the remaining candidates are not considered
                    wanted = wanted[:fits]
                img, mask = window(src, c, side)
                maps = np.full((n_p, side, side), -np.inf, np.float32)
                for part in run(img, wanted, maps):
                    out[k, part] = maps[part][:, mask].mean(axis=1)
                    if out_of_reach(k, check_margin(out[k])):
                        break  # more rivals only lower the margin
                if relation is not None and np.isfinite(out[k, anchor]):
                    rel[k] = relation_agreement(maps, mask, anchor, relation[1])
                if evidence is not None and floor is not None:
                    score = evidence[k] * float(class_factor(
                        np.array([check_margin(out[k]) + extra[k]]))[0])
                    if score >= min_score:
                        best[0] = max(best[0], score * floor)
        return out, rel

    def candidate_window(self, src, source: SceneSource, cand, side: int
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(image [3, side, side], the candidate's mask there) of a window of ``side`` work-grid
        pixels centred on ``cand``, kept inside the raster when it fits; ``src`` is the open
        raster of ``source``."""
        from rrsis_geo.geo.tiling import centred_origin, make_tile, read_tile

        grid = source.grid
        r0, c0, r1, c1 = cand.bbox_px
        tile = make_tile(0, centred_origin((r0 + r1) // 2, side, grid.height),
                         centred_origin((c0 + c1) // 2, side, grid.width), side, grid)
        img, _ = read_tile(src, source.info, grid, tile, source.bands, source.normalizer)
        return img, self._candidate_mask(source.acc, tile, cand)

    def _candidate_mask(self, acc, tile, cand) -> np.ndarray:
        """bool [T, T]: the candidate's pixels inside ``tile`` (its 4-connected pieces there
        that hold one of its seeds; the whole thresholded bbox part if none does)."""
        from scipy import ndimage

        win = tile.window_in_grid
        wr, wc = int(win.row_off), int(win.col_off)
        h, w = int(win.height), int(win.width)
        above = np.asarray(acc.read(slice(wr, wr + h), slice(wc, wc + w))) >= self.opts.threshold
        labels, _ = ndimage.label(above)
        keep = {labels[r - wr, c - wc] for r, c in cand.seeds
                if wr <= r < wr + h and wc <= c < wc + w}
        keep.discard(0)
        if keep:
            inside = np.isin(labels, list(keep))
        else:
            br0, bc0, br1, bc1 = cand.bbox_px
            inside = np.zeros_like(above)
            inside[max(0, br0 - wr):max(0, br1 - wr), max(0, bc0 - wc):max(0, bc1 - wc)] = True
            inside &= above
        mask = np.zeros((tile.size, tile.size), bool)
        mask[tile.inner_slices] = inside
        return mask

    def class_check(self, source: SceneSource, comps, evidence, rank_key, expression,
                    areas) -> tuple[np.ndarray, np.ndarray | None] | None:
        """:meth:`_class_check` as the progress stage "check" (reported also when the check
        does not apply, with nothing to do, so that progress consumers see every stage)."""
        with self.rep.stage("check", unit="window"):
            return self._class_check(source, comps, evidence, rank_key, expression, areas)

    def _class_check(self, source: SceneSource, comps, evidence, rank_key, expression,
                     areas) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(class-check factor per candidate, 0 for candidates not considered; relation
        agreement per candidate or None), or None when the check does not apply (switched off,
        no class of the model named, no rival class). Checked, best ``rank_key`` first (evidence
        and scene-frame words), within ``--check-budget`` (:meth:`class_margins`): the
        candidates with ``evidence >= --min-score``, in ``--mode single`` the
        :data:`CLASS_CHECK_TOP` best. ``areas`` (m², per candidate) add the size and shape
        margins of vehicle kinds (:meth:`vehicle_margins`) to the model's."""
        if not self.opts.class_check:
            return None
        classes = self.model_classes()
        named = named_class(expression, classes)
        rivals = rival_classes(named, classes) if named else []
        if not rivals:
            return None
        order = [int(i) for i in np.argsort(-rank_key, kind="stable")
                 if evidence[i] >= self.opts.min_score]
        single = self.opts.mode == "single"
        if single:
            order = order[:CLASS_CHECK_TOP]
        factor = np.zeros(len(comps))
        if not order:
            return factor, None
        names = [named] + rivals
        prompts = check_prompts(names, self.opts.mode)
        relation = self.judged_relation(expression)
        anchor = None
        if relation is not None:
            anchor = (names.index(relation.anchor), relation)
        # upper bound of the images, for the bar: the screen, then named + anchor + rivals per
        # candidate, as far as the budget goes (a candidate larger than the window costs more)
        tile = int(self.opts.tile_size or self.seg.input_size)
        per = min(len(prompts), 1 + (anchor is not None) + CHECK_RIVALS)
        screen = len(prompts) * min(CHECK_SCREEN, len(order))
        budget = self.check_budget()
        rest = budget - screen * (min(tile, CHECK_SCREEN_WINDOW) / tile) ** 2
        total = screen + min(per * len(order),
                             max(0, int(rest / (min(tile, CHECK_WINDOW) / tile) ** 2 + 1e-9)))
        floor = None
        if single:
            plain = parse_scene_query(expression).empty and relation is None
            floor = 1.0 if plain else 1.0 - LANGUAGE_WEIGHT
        images0 = self.check_images
        t0 = time.perf_counter()
        self.rep.set_total(total)
        self.rep.message(f"class check: up to {len(order)} candidate(s), \"{named}\" against "
                         f"{len(rivals)} other classes (screened on the best candidate, then "
                         f"the {min(CHECK_RIVALS, len(rivals))} closest), budget "
                         f"{budget:g} windows" + (
                             f" (auto: {self.n_tiles} tiles)"
                             if str(self.opts.check_budget).lower() == "auto" else ""))
        if relation is not None:
            self.rep.message(f"relation: \"{relation.phrase}\" the {relation.anchor}, "
                             "judged in each candidate's window")
        prior = self.vehicle_margins(source.grid, comps, areas, named, rivals, not single)
        prior[order] += self.objclass_margins(source, [comps[i] for i in order], named, rivals)
        m, rel = self.class_margins(source, [comps[i] for i in order], prompts, anchor,
                                    evidence=evidence[order], floor=floor,
                                    prior=prior[order])
        self.rep.set_total(self.check_images - images0)
        self.check_seconds += time.perf_counter() - t0
        done = ~np.isnan(m).all(axis=1)
        idx = np.asarray(order)[done]
        margins = np.array([check_margin(row) for row in m[done]])
        factor[idx] = class_factor(margins + prior[idx])
        checked = int(done.sum())
        self.rep.message(f"class check: {checked} candidate(s) checked in "
                         f"{self.check_images - images0} windows")
        # --mode all ("the trees" over a whole orthophoto: hundreds of candidates): the budget
        # checks the best ones; the others are look-alikes of those and take their median
        # factor, instead of being dropped (which capped a plural answer at a few objects)
        rest = np.asarray(order)[~done] if not single and checked else np.zeros(0, int)
        if rest.size:
            # the checked ones' median margin, and each candidate's own size and shape
            factor[rest] = class_factor(float(np.median(margins)) + prior[rest])
            self.rep.message(f"class check: {rest.size} more candidate(s) take the checked "
                             f"ones' median margin {float(np.median(margins)):.2f}")
        if rel is None:
            return factor, None
        agree = np.zeros(len(comps))
        agree[idx] = rel[done]
        if rest.size:
            agree[rest] = float(np.median(rel[done]))
        return factor, agree

    def objclass_margins(self, source: SceneSource, comps, named: str,
                         rivals: list[str]) -> np.ndarray:
        """The object classifier's margin per candidate (at most 0; all 0 when the weights
        have no classifier or it does not judge ``named``): the log-probability of
        ``named`` minus that of the likeliest of ``rivals`` and ``"other"``, seen in a window of
        the classifier's size centred on the candidate, with the candidate's mask. A candidate
        the classifier takes for a rival (a basketball court found for "the tennis court") or
        for none of its objects (a shadow found for "the pond") loses; one it finds as likely
        the named class as anything else keeps its score."""
        import rasterio

        from rrsis_geo.geo.raster import bounded_gdal_cache
        from rrsis_geo.model.objclass import OTHER

        out = np.zeros(len(comps))
        use = bool(comps) and getattr(self.opts, "object_classifier", True)
        clf = self.seg.object_classifier() if use else None
        if clf is None or named not in getattr(clf, "judged", clf.classes):
            return out
        others = [clf.classes.index(c) for c in [*rivals, OTHER] if c in clf.classes]
        mine = clf.classes.index(named)
        side = int(clf.window)
        with bounded_gdal_cache(), rasterio.open(source.input_path) as src:
            for s0 in range(0, len(comps), OBJCLASS_BATCH):
                part = comps[s0:s0 + OBJCLASS_BATCH]
                pairs = [self.candidate_window(src, source, c, side) for c in part]
                logp = self.seg.classify_objects(np.stack([p[0] for p in pairs]),
                                                 np.stack([p[1] for p in pairs]))
                out[s0:s0 + len(part)] = np.minimum(
                    0.0, logp[:, mine] - logp[:, others].max(axis=1))
        self.rep.message(f"class check: the object classifier finds {int((out < -1).sum())} "
                         f"of {len(comps)} candidate(s) more likely something else than "
                         f"\"{named}\"")
        return out

    @staticmethod
    def vehicle_margins(grid, comps, areas, named: str, rivals: list[str],
                        plural: bool = False) -> np.ndarray:
        """Size and shape margins per candidate (0 unless ``named`` is a vehicle kind;
        :func:`~rrsis_geo.inference.scoring.size_margin`,
        :func:`~rrsis_geo.inference.scoring.shape_margin`). The shape counts only where the
        candidate is at least :data:`~rrsis_geo.inference.scoring.SHAPE_MIN_NATIVE_PX` pixels of
        the raster itself wide (``grid.scale``: native pixel size / work pixel size); with
        ``plural`` (``--mode all``), only for a candidate the size of one vehicle of the kind (at
        most :data:`~rrsis_geo.inference.scoring.SHAPE_MAX_AREA_RATIO` times its typical
        footprint): two parked cars merged side by side make a square blob that must not fail
        "the cars"."""
        prior = np.zeros(len(comps))
        if named not in VEHICLE_TYPICAL_M2:
            return prior
        scale = float(getattr(grid, "scale", 1.0) or 1.0)
        one = VEHICLE_TYPICAL_M2[named] * SHAPE_MAX_AREA_RATIO if plural else np.inf
        for i, (c, a) in enumerate(zip(comps, areas)):
            prior[i] = size_margin(float(a), named, rivals)
            length, width = c.axes_px
            if width / scale >= SHAPE_MIN_NATIVE_PX and a <= one:
                prior[i] += shape_margin(length, width, named, rivals)
        return prior

    def select(self, source: SceneSource, expression: str, overview=None):
        """Scored, ranked, selected objects (``SelectedObject``, geometry in the grid CRS) for
        ``expression`` in ``source`` (its ``acc``: the sentence's probability mosaic).

        ``overview``: ``read_overview``'s result if the caller read it already.
        """
        from rrsis_geo.geo.vectorize import find_components, pixel_areas_m2, polygonize

        opts = self.opts
        grid, acc = source.grid, source.acc

        # 1b. a class the model never learned to find: nothing it paints can be one
        if self.refuse_untrained(expression):
            return []

        # 2. global pass (first: candidates record the overview pixels they touch)
        gprob = None
        if self.needs_global_pass(grid):
            gprob, (sx, sy) = self.global_probability(source, expression, overview)

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
            self.rep.message(f"no target: nothing in the probability mosaic reaches --threshold "
                             f"{opts.threshold:g}" + (f" over --min-area {opts.min_area:g} m²"
                                                      if opts.min_area > 0 else ""))
            return []

        gscores: list[float | None] = [None] * len(comps)
        vis = np.zeros(len(comps))
        if gprob is not None:
            gflat = gprob.ravel()
            for i, c in enumerate(comps):
                gscores[i] = float(gflat[c.overview_pixels].mean())
                vis[i] = visibility(c.pixel_count, sx, sy)
        mean_prob = np.array([c.mean_prob for c in comps])
        g = np.array([x if x is not None else 0.0 for x in gscores])
        local, evidence = evidence_scores(mean_prob, areas, referent_min_area(expression), g, vis)

        # 3. scene-frame language (positions and sizes only: before the class check, so that it
        # checks the candidates that can win — "the biggest building" among 30 buildings)
        query = parse_scene_query(expression)
        rows = np.array([(c.bbox_px[0] + c.bbox_px[2]) / 2 for c in comps])
        cols = np.array([(c.bbox_px[1] + c.bbox_px[3]) / 2 for c in comps])
        cent = np.stack([cols / max(grid.width, 1), rows / max(grid.height, 1)], axis=1)

        def ranking(evidence, relation_agree=None):
            # language only ranks candidates that the model itself supports
            return ranking_key(evidence, query, cent, areas, opts.min_score, relation_agree)

        rank_key = ranking(evidence)
        before_check = evidence
        # 2b. class check (and relation), on the best candidates by that ranking
        checked = self.class_check(source, comps, evidence, rank_key, expression, areas)
        if checked is not None:
            evidence = evidence * checked[0]
            rank_key = ranking(evidence, checked[1])
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
        if not out:
            self.rep.message(no_target_message(evidence, before_check, areas, opts.min_score))
        return out
