"""Pure scoring maths of scene-level referring (numpy only: no raster, no model).

:class:`rrsis_geo.inference.scene.SceneSelector` combines these scores (its module docstring
describes the steps):

- evidence ``s = (1 - W v) l + W v g`` (:func:`evidence_scores`): local score ``l`` (mean tile
  probability times ``sqrt(min(1, area / A_min))``), global score ``g``, visibility ``v``,
  ``W =`` :data:`GLOBAL_WEIGHT`;
- class-check factor ``sigmoid((m + OFFSET) / SCALE)`` of the margin ``m`` (:func:`class_factor`,
  :func:`check_margin`), the model's margin plus a size and a shape margin for vehicle kinds
  (:func:`size_margin`, :func:`shape_margin`);
- agreement ``q`` in [0, 1] with the scene-frame words (:func:`language_agreement`) and with a
  relational phrase (:func:`relation_agreement`);
- ranking ``s * (1 - Q + Q q)`` with ``Q =`` :data:`LANGUAGE_WEIGHT` (:func:`ranking_key`), then
  selection (:func:`select_objects`, :func:`selection_limit`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rrsis_geo.text.scene_words import (NOT_ELONGATED, VEHICLE_ELONGATION, VEHICLE_TYPICAL_M2,
                                        Relation, SceneQuery)

#: components smaller than this many work-grid pixels are treated as noise
MIN_PIXELS = 16
#: weight of the global pass for a fully visible object
GLOBAL_WEIGHT = 0.1
#: side (overview pixels) at which an object counts as fully visible in the global pass
VISIBLE_SIDE = 4.0
#: weight of scene-frame language (position words, superlatives) in the ranking
LANGUAGE_WEIGHT = 0.8
#: class check: factor = sigmoid((margin + OFFSET) / SCALE); margin in logits
CLASS_MARGIN_OFFSET = 1.0
CLASS_MARGIN_SCALE = 1.0
#: size margin: spread of a vehicle kind's footprint around its typical area, in ln(m²)
SIZE_SIGMA = 0.35
#: shape margin: spread of a vehicle kind's elongation around its typical one, in ln units
SHAPE_SIGMA = 0.25
#: shape margin: the candidate's width must span this many pixels of the raster itself (not of
#: the resampled work grid) for its shape to count: a car in 1 m imagery is two pixels wide and
#: no shape
SHAPE_MIN_NATIVE_PX = 3.0
#: shape margin, in ``--mode all``: only for a candidate of at most this many times the named
#: kind's typical footprint, the size of one vehicle (two cars parked side by side, merged, are
#: about square, and "the cars" must keep them)
SHAPE_MAX_AREA_RATIO = 1.5


def class_factor(margins: np.ndarray) -> np.ndarray:
    """Class-check factor in (0, 1) from ``margin = logit(named) - max logit(rivals)``."""
    z = (np.asarray(margins, dtype=np.float64) + CLASS_MARGIN_OFFSET) / CLASS_MARGIN_SCALE
    return 1.0 / (1.0 + np.exp(-z))


def no_target_message(scores: np.ndarray, before_check: np.ndarray, areas: np.ndarray,
                      min_score: float) -> str:
    """The log line of a "no target" answer: the best score found, and what it was before the
    class check when the check lowered it.

    >>> no_target_message(np.array([0.2, 0.31]), np.array([0.8, 0.4]), np.array([50., 9.]), 0.5)
    'no target: no candidate scores --min-score 0.5 or more; the best score found is 0.31 (a 9 m² candidate; 0.80 for a 50 m² one before the class check)'
    """
    best = int(np.argmax(scores))
    text = (f"no target: no candidate scores --min-score {min_score:g} or more; the best score "
            f"found is {scores[best]:.2f} (a {areas[best]:.0f} m² candidate")
    first = int(np.argmax(before_check))
    if before_check[first] > scores[best] + 1e-9:
        other = "it" if first == best else f"a {areas[first]:.0f} m² one"
        text += f"; {before_check[first]:.2f} for {other} before the class check"
    return text + ")"


def size_margin(area_m2: float, named: str, rivals) -> float:
    """Margin (logits, <= 0) that a candidate's size adds to the class check's, for vehicle kinds
    (:data:`~rrsis_geo.text.scene_words.VEHICLE_TYPICAL_M2`), which differ from above mainly by
    size: ``min(0, (d_r - d_n) / (2 SIZE_SIGMA²))`` with ``d = (ln area - ln typical)²`` for the
    named class (``d_n``) and the closest *smaller* rival kind (``d_r``). One-sided: a candidate
    smaller than the named class's typical footprint and closer in size to a smaller kind (a
    car found for "the truck") loses; one at least typical never does (a row of parked cars
    merged into one component must not fail "the cars"). 0 when the named class or no smaller
    rival has a typical size.

    >>> round(size_margin(10.0, "truck", ["car", "bus"]), 2)  # a car's footprint
    -3.25
    >>> size_margin(27.0, "truck", ["car", "bus"]), size_margin(30.0, "car", ["truck"])
    (0.0, 0.0)
    """
    typical = VEHICLE_TYPICAL_M2.get(named)
    if typical is None or not area_m2 < typical or area_m2 <= 0:
        return 0.0
    smaller = [VEHICLE_TYPICAL_M2[r] for r in rivals
               if VEHICLE_TYPICAL_M2.get(r, math.inf) < typical]
    return _nearer_reference_margin(area_m2, typical, smaller, SIZE_SIGMA)


def shape_margin(length: float, width: float, named: str, rivals) -> float:
    """Margin (logits, <= 0) that a candidate's shape adds to the class check's, for vehicle
    kinds (:data:`~rrsis_geo.text.scene_words.VEHICLE_ELONGATION`): as :func:`size_margin`, on
    the elongation ``e = length / width`` (:attr:`rrsis_geo.geo.vectorize.Candidate.axes_px`)
    against the less elongated rival kinds and :data:`~rrsis_geo.text.scene_words.NOT_ELONGATED`
    (``SHAPE_SIGMA`` in ln units). A square blob is no truck (a small building is), nor a car;
    a car's 2.5 : 1 is less of a truck than a truck's 4 : 1. The caller passes ``width`` in
    pixels of the raster itself and skips the term below :data:`SHAPE_MIN_NATIVE_PX`.

    >>> round(shape_margin(9.0, 6.0, "truck", ["car", "building"]), 2)  # a small building
    -8.34
    >>> shape_margin(40.0, 10.0, "truck", ["car"]), shape_margin(20.0, 8.0, "car", [])
    (0.0, 0.0)
    """
    typical = VEHICLE_ELONGATION.get(named)
    if typical is None or width <= 0 or length <= 0:
        return 0.0
    refs = [NOT_ELONGATED] + [VEHICLE_ELONGATION[r] for r in rivals
                              if VEHICLE_ELONGATION.get(r, math.inf) < typical]
    return _nearer_reference_margin(max(length / width, 1.0), typical, refs, SHAPE_SIGMA)


def _nearer_reference_margin(value: float, typical: float, refs: list[float],
                             sigma: float) -> float:
    """``min(0, (d_ref - d_named) / (2 sigma²))`` with ``d = (ln value - ln x)²`` for ``x`` the
    named kind's ``typical`` value (``d_named``) and the nearest of ``refs`` (``d_ref``); 0
    without ``refs``."""
    if not refs:
        return 0.0
    lv = math.log(value)
    d_named = (lv - math.log(typical)) ** 2
    d_ref = min((lv - math.log(r)) ** 2 for r in refs)
    return min(0.0, (d_ref - d_named) / (2 * sigma ** 2))


def check_margin(row: np.ndarray) -> float:
    """Class-check margin from one candidate's prompt margins (named first, NaN = not run):
    named minus the best rival that was run; the named margin alone when no rival was run."""
    row = np.asarray(row, dtype=np.float64)
    rivals = row[1:][~np.isnan(row[1:])]
    return float(row[0] - rivals.max()) if rivals.size else float(row[0])


def relation_agreement(maps: np.ndarray, mask: np.ndarray, anchor: int, relation: Relation,
                       min_pixels: int = MIN_PIXELS) -> float:
    """Agreement in [0, 1] of one candidate with a relational phrase, from the class check's
    window around it.

    Args:
        maps: [P, T, T] logit margins of the class prompts in the window.
        mask: bool [T, T], the candidate's pixels.
        anchor: index of the anchor's class prompt in ``maps``.

    Anchor pixels are those where the anchor's prompt is positive and beats every other prompt
    (outside the candidate). No anchor in the window: 0. "near": ``exp(-d / (T/4))`` with ``d``
    the gap in pixels between candidate and anchor; a direction: ``sigmoid((c - a)·dir / (T/8))``
    with ``c``, ``a`` the centroids.
    """
    size = maps.shape[-1]
    is_anchor = (maps[anchor] > 0) & (maps.argmax(axis=0) == anchor) & ~mask
    if is_anchor.sum() < min_pixels or not mask.any():
        return 0.0
    if relation.direction is None:
        from scipy import ndimage

        gap = ndimage.distance_transform_edt(~is_anchor)[mask].min()
        return float(math.exp(-gap / (size / 4)))
    ar, ac = np.nonzero(is_anchor)
    cr, cc = np.nonzero(mask)
    proj = ((cc.mean() - ac.mean()) * relation.direction[0]
            + (cr.mean() - ar.mean()) * relation.direction[1])
    return float(1.0 / (1.0 + math.exp(-proj / (size / 8))))


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


def visibility(pixel_count: int, sx: float, sy: float) -> float:
    """How visible a component of ``pixel_count`` work-grid pixels is in the global pass (overview
    scale ``sx``, ``sy`` per work-grid pixel): ``clip(sqrt(n_overview_pixels) / VISIBLE_SIDE, 0, 1)``."""
    return min(1.0, math.sqrt(pixel_count * sx * sy) / VISIBLE_SIDE)


def evidence_scores(mean_prob: np.ndarray, areas: np.ndarray, min_area: float,
                    global_scores: np.ndarray, visible: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(local score ``l``, evidence ``s``) of each candidate.

    ``l`` = mean tile probability times ``sqrt(min(1, area / min_area))`` (a component smaller
    than the smallest plausible referent is a piece of something); ``s = (1 - W v) l + W v g``
    with ``W =`` :data:`GLOBAL_WEIGHT`, ``v`` = ``visible`` and ``g`` = ``global_scores``.
    """
    local = mean_prob * np.sqrt(np.minimum(1.0, areas / min_area))
    w = GLOBAL_WEIGHT * visible
    return local, (1 - w) * local + w * global_scores


def ranking_key(evidence: np.ndarray, query: SceneQuery, centroids: np.ndarray,
                areas: np.ndarray, min_score: float,
                relation_agree: np.ndarray | None = None) -> np.ndarray:
    """The ranking ``s * (1 - Q + Q q)``, ``Q =`` :data:`LANGUAGE_WEIGHT`.

    The agreement ``q`` with the scene-frame words (:func:`language_agreement`) is computed among
    the candidates the model itself supports (``evidence >= min_score``), and only when there are
    several; a relation agreement counts as one more word. Others keep ``q = 1``.
    """
    supported = evidence >= min_score
    agree = np.ones(len(evidence))
    if supported.sum() > 1:
        agree[supported] = language_agreement(query, centroids[supported], areas[supported])
        if relation_agree is not None:  # the relation counts as one more word
            agree = relation_agree if query.empty else (agree + relation_agree) / 2
    return evidence * (1 - LANGUAGE_WEIGHT + LANGUAGE_WEIGHT * agree)
