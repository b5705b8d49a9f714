"""Large georeferenced scenes and 3 x 3 chip mosaics: generation, GeoTIFF and the
targets/objects GeoPackages.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.data.synth.canvas import Canvas, Obj, make_object, make_road, place
from rrsis_geo.data.synth.chips import check_chip_size, make_chip
from rrsis_geo.data.synth.expressions import colour_word, make_expression, pick
from rrsis_geo.data.synth.rendering import render, value_noise
from rrsis_geo.data.synth.scenarios import (
    Retry,
    Scenario,
    scn_absolute,
    scn_category,
    scn_colour,
    scn_combined,
    scn_relative,
    scn_size,
    veh_road,
)
from rrsis_geo.data.synth.vocabulary import (
    ABSENT_ONLY_WORDS,
    CATEGORY_WORDS,
    CHIP_GSD,
    MIN_SCENE_SIZE,
    PALETTES,
    REGIONS,
    SCENE_REGION_PHRASES,
    VEHICLES,
)
from rrsis_geo.errors import UsageError

MAX_SCENE_TARGETS = 6
# (expression kind, categories it may use) for scene-level targets; spatial words refer to the
# whole scene, and every category a target uses is kept out of the clutter so the sentence
# stays unambiguous scene-wide (buildings: see _SceneRules)
# (vehicles are tiny at scene scale: they only appear as "the truck" or "the bus next to the pond")
SCENE_KINDS: list[tuple[str, list[str]]] = [
    ("spatial-absolute", ["storage tank", "tennis court", "basketball court", "pond"]),
    ("colour", ["storage tank", "tennis court", "basketball court", "building"]),
    ("size", ["storage tank", "pond", "building"]),
    ("category", ["tennis court", "basketball court", "pond", "truck", "bus", "storage tank"]),
    ("combined", ["storage tank", "tennis court", "basketball court"]),
    ("spatial-relative", ["truck", "bus", "storage tank"]),
]
SCENE_ANCHORS = ["pond", "tennis court", "basketball court"]
# a building target reserves this roof colour (colour kind) or the largest size (size kind)
SCENE_BUILDING_COLOUR = "blue"


@dataclass
class SceneTarget:
    """One scene-level referring expression.

    ``referent_id`` indexes :attr:`Scene.label` (0 when ``absent``: nothing in the scene fits).
    """

    expression: str
    category: str
    type: str
    needs_disambiguation: bool
    absent: bool
    referent_id: int = 0
    n_same_category: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scene:
    """A generated large scene: image uint8 [H,W,3] (0 = nodata), valid bool [H,W],
    label int32 [H,W] (object ids), targets, and the metres per pixel it was drawn at."""

    image: np.ndarray
    valid: np.ndarray
    label: np.ndarray
    targets: list[SceneTarget]
    gsd: float
    seed: int
    categories: dict[int, str] = field(default_factory=dict)  # object id -> category

    def referent_mask(self, i: int) -> np.ndarray:
        """bool [H,W] of target ``i`` (all False for an absent target)."""
        t = self.targets[i]
        if t.absent:
            return np.zeros(self.label.shape, bool)
        return self.label == t.referent_id


def _margin_profile(rng: np.random.Generator, n: int) -> np.ndarray:
    """Irregular nodata width along one edge, px [n] (always >= 1% of the side)."""
    base = rng.uniform(0.01, 0.03) * n
    wobble = value_noise(rng, 1, n, n / rng.uniform(3, 8))[0]
    return np.maximum(0.01 * n, base + 0.012 * n * np.abs(wobble) + 0.004 * n * wobble)


def _valid_area(rng: np.random.Generator, n: int, enabled: bool, shrink: float = 0.0
                ) -> np.ndarray:
    """bool [n, n]: inside the irregular nodata margin (``shrink`` px further in)."""
    if not enabled:
        return np.ones((n, n), bool)
    left, right, top, bottom = (_margin_profile(rng, n) + shrink for _ in range(4))
    yy = np.arange(n, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(n, dtype=np.float32)[None, :] + 0.5
    valid = (xx >= left[:, None]) & (xx <= n - right[:, None])
    valid &= (yy >= top[None, :]) & (yy <= n - bottom[None, :])
    corner = int(rng.integers(4))
    cut = rng.uniform(0.1, 0.22) * n + shrink * 1.42
    cx = xx if corner in (0, 3) else n - xx
    cy = yy if corner in (0, 1) else n - yy
    valid &= (cx + cy) >= cut  # one clipped corner, like the edge of an acquisition strip
    return valid


@dataclass
class _SceneRules:
    """Restrictions on clutter imposed by the targets (keeps their sentences unambiguous)."""

    protected: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)  # categories some target already refers to
    building_colours: list[str] = field(default_factory=lambda: list(PALETTES["building"]))
    building_max_area: float = float("inf")


def _scene_target(cv: Canvas, rng: np.random.Generator, kind: str, cat: str,
                  rules: _SceneRules) -> Scenario:
    if kind == "spatial-absolute":
        return scn_absolute(cv, rng, cat)
    if kind == "colour":
        colour = SCENE_BUILDING_COLOUR if cat == "building" else None
        return scn_colour(cv, rng, cat, colour=colour)
    if kind == "size":
        return scn_size(cv, rng, cat, size="large" if cat == "building" else None,
                         superlative=True)
    if kind == "category":
        return scn_category(cv, rng, cat)
    if kind == "combined":
        return scn_combined(cv, rng, cat)
    if kind == "spatial-relative":
        anchors = [a for a in SCENE_ANCHORS if a not in rules.protected]
        return scn_relative(cv, rng, cat, anchors=anchors, rels=["near"])
    raise ValueError(kind)


def _scene_roads(cv: Canvas, rng: np.random.Generator) -> None:
    """A loose grid: ~1 road per 1000 px each way, at least one of each."""
    for horizontal in (True, False):
        k = max(1, int(round(cv.w / (1000 * cv.scale) * rng.uniform(0.7, 1.1))))
        slots = (np.arange(k) + rng.uniform(0.25, 0.75, size=k)) / k
        for f in slots:
            cv.add(make_road(cv, rng, horizontal=horizontal, pos=float(f) * cv.w))


def _try_add(cv: Canvas, o: Obj | None, check: Callable[[Obj], bool] | None = None) -> bool:
    if o is None or not cv.fits(o) or (check is not None and not check(o)):
        return False
    cv.add(o)
    return True


def _scene_clutter(cv: Canvas, rng: np.random.Generator, rules: _SceneRules,
                   absent: set[str]) -> None:
    """Fill the scene: buildings along roads and in blocks, tree clumps, cars, free objects."""
    s = cv.scale
    af = cv.w * cv.h / (4096 * 4096 * s * s)  # area in chip-px units, relative to 4096²

    def building_ok(o: Obj) -> bool:
        return o.area * 1.8 <= rules.building_max_area

    def building(cx: float, cy: float, ang: float | None) -> None:
        size_class = str(rng.choice(["small", "medium"], p=[0.4, 0.6]))
        o = make_object(cv, rng, "building", cx, cy, ang=ang, size_class=size_class,
                        colour=str(rng.choice(rules.building_colours)))
        _try_add(cv, o, building_ok)

    if "building" not in rules.protected:
        for road in cv.roads:  # frontage: buildings lined up along both sides of each road
            ang, w = road.p["ang"], road.p["W"]
            c, sn = math.cos(ang), math.sin(ang)
            t = -0.5 * max(cv.w, cv.h)
            while t < 0.5 * max(cv.w, cv.h):
                t += float(rng.uniform(45, 80) * s)
                side = float(rng.choice([-1.0, 1.0]))
                off = side * (w / 2 + rng.uniform(26, 40) * s)
                cx, cy = road.p["cx"] + t * c - off * sn, road.p["cy"] + t * sn + off * c
                if 0 < cx < cv.w and 0 < cy < cv.h and rng.random() < 0.75:
                    building(cx, cy, ang + float(rng.normal(0, 0.05)))
        for _ in range(int(260 * af)):  # scattered blocks
            building(float(rng.uniform(0, cv.w)), float(rng.uniform(0, cv.h)), None)
    if "tree" not in rules.protected:
        for _ in range(int(220 * af)):  # clumps
            cx, cy = float(rng.uniform(0, cv.w)), float(rng.uniform(0, cv.h))
            for _ in range(int(rng.integers(2, 9))):
                r = rng.uniform(0, 45 * s)
                a = rng.uniform(0, 2 * math.pi)
                o = make_object(cv, rng, "tree", cx + r * math.cos(a), cy + r * math.sin(a),
                                size_class=str(rng.choice(["small", "medium"])))
                _try_add(cv, o)
    if "car" not in rules.protected and cv.roads:
        for _ in range(int(320 * af)):
            road = cv.roads[int(rng.integers(len(cv.roads)))]
            place(cv, rng, "car", road=road, tries=2)
    free = [c for c in ("storage tank", "tennis court", "basketball court", "pond", "truck",
                        "bus") if c not in rules.protected and c not in absent]
    for cat in free:
        for _ in range(int(rng.integers(1, 4) * max(af, 0.25) + 0.5)):
            place(cv, rng, cat, tries=10, road=veh_road(cv, rng, cat))


def _absent_expression(rng: np.random.Generator, cat: str) -> tuple[str, str]:
    noun = pick(rng, CATEGORY_WORDS.get(cat, [cat]))
    form = int(rng.integers(3))
    if form == 1:
        region = str(rng.choice(REGIONS))
        return f"the {noun} {pick(rng, SCENE_REGION_PHRASES[region])}", "spatial-absolute"
    if form == 2 and cat in PALETTES:
        return f"the {colour_word(rng, str(rng.choice(PALETTES[cat])))} {noun}", "attribute"
    return f"the {noun}", "category"


def _check_scene_args(size: int, gsd: float, n_targets: int, n_absent: int) -> None:
    if not MIN_SCENE_SIZE <= size <= 32768:
        raise UsageError(f"scene size must be between {MIN_SCENE_SIZE} and 32768 px, got {size}")
    if not 0.05 <= gsd <= 2.0:
        raise UsageError(f"gsd must be between 0.05 and 2 m/px, got {gsd}")
    if not 1 <= n_targets <= MAX_SCENE_TARGETS:
        raise UsageError(f"targets must be between 1 and {MAX_SCENE_TARGETS}, got {n_targets}")
    if not 0 <= n_absent <= len(ABSENT_ONLY_WORDS):
        raise UsageError(f"absent must be between 0 and {len(ABSENT_ONLY_WORDS)}, got {n_absent}")
    if size * gsd < 400 * CHIP_GSD:  # the targets need ~100 m x 100 m of ground
        raise UsageError(f"a {size} px scene at {gsd} m/px is too small for the targets "
                         f"(needs >= {400 * CHIP_GSD / gsd:.0f} px)")


def generate_scene(seed: int, size: int = 4096, *, gsd: float = CHIP_GSD,
                   nodata_margin: bool = True, n_targets: int = 6, n_absent: int = 2,
                   realism: str = "none") -> Scene:
    """A large scene of the chip vocabulary with scene-level referring targets.

    Every present target has a unique referent in the whole scene; its spatial words refer to
    the whole frame and its same-category distractors lie elsewhere. ``n_absent`` extra targets
    name an object that is not in the scene at all (``absent=True``).

    Args:
        seed: non-negative int; the scene is deterministic in (seed, size, gsd, options).
        size: side in px. gsd: metres per px; objects keep their metric size (0.25 = chips).
        realism: as for :func:`~rrsis_geo.data.synth.chips.generate_chip` (scenes never turn
            panchromatic here).
    """
    _check_scene_args(size, gsd, n_targets, n_absent)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x5CE7E]))
    scale = CHIP_GSD / gsd
    mrng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x3A76]))
    valid = _valid_area(mrng, size, nodata_margin)
    mrng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x3A76]))
    inner = _valid_area(mrng, size, nodata_margin, shrink=6 * scale)
    cv = Canvas(size, size, scale, valid=inner)
    _scene_roads(cv, rng)

    rules = _SceneRules()
    placed: list[Scenario] = []
    kinds = [SCENE_KINDS[i] for i in rng.permutation(len(SCENE_KINDS))]
    k = 0
    for _ in range(12 * n_targets):
        if len(placed) == n_targets:
            break
        kind, cats = kinds[k % len(kinds)]
        k += 1
        cands = [c for c in cats if c not in rules.protected and c not in rules.used]
        if kind == "spatial-relative" and not [a for a in SCENE_ANCHORS
                                               if a not in rules.protected]:
            continue
        if not cands:
            continue
        cat = str(rng.choice(cands))
        snap = cv.snapshot()
        try:
            sc = _scene_target(cv, rng, kind, cat, rules)
        except Retry:
            cv.restore(snap)
            continue
        placed.append(sc)
        rules.used.add(sc.category)
        rules.protected.add(sc.category)
        if sc.anchor is not None:
            rules.protected.add(sc.anchor.category)
        if sc.category == "building":
            # clutter buildings stay: other roof colours, or clearly smaller than the target
            rules.protected.discard("building")
            if kind == "colour":
                rules.building_colours = [c for c in PALETTES["building"]
                                          if c != SCENE_BUILDING_COLOUR]
            else:
                rules.building_max_area = float(sc.referent.area)
    if not placed:
        raise RuntimeError(f"could not place any target in scene seed {seed}")

    used = {o.category for o in cv.objects}
    absent_pool = [c for c in ("storage tank", "tennis court", "basketball court", "pond",
                               "truck", "bus") if c not in used and c not in rules.protected]
    absent_pool += ABSENT_ONLY_WORDS
    absent_cats = [str(c) for c in rng.choice(absent_pool, size=n_absent, replace=False)]
    _scene_clutter(cv, rng, rules, set(absent_cats))

    from rrsis_geo.data.synth.look import make_look

    look = make_look(realism, seed, size, scale=scale)
    img, label = render(cv, rng, look=look)
    if look is not None:
        img, _ = look.finish(img, allow_pan=False)
    img[~valid] = 0
    label[~valid] = 0

    targets: list[SceneTarget] = []
    for sc in placed:
        same = sum(1 for o in cv.objects if o.category == sc.category)
        det = dict(sc.details)
        targets.append(SceneTarget(
            expression=make_expression(rng, sc, cv, scene=True), category=sc.category, type=sc.type,
            needs_disambiguation=same > 1, absent=False, referent_id=sc.referent.id,
            n_same_category=same, details=det))
    for cat in absent_cats:
        expr, etype = _absent_expression(rng, cat)
        targets.append(SceneTarget(expression=expr, category=cat, type=etype,
                                   needs_disambiguation=False, absent=True))
    return Scene(image=img, valid=valid, label=label, targets=targets, gsd=gsd, seed=seed,
                 categories={o.id: o.category for o in cv.objects})


def _mask_polygon(mask: np.ndarray, transform: Any) -> Any:
    """Exact polygon(s) of a bool mask's pixels, in the transform's CRS (a MultiPolygon)."""
    from rasterio import features
    from rasterio.windows import Window, transform as win_transform
    from shapely.geometry import MultiPolygon, shape
    from shapely.ops import unary_union

    ys = np.nonzero(mask.any(axis=1))[0]
    xs = np.nonzero(mask.any(axis=0))[0]
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    sub = mask[y0:y1, x0:x1]
    wt = win_transform(Window(x0, y0, x1 - x0, y1 - y0), transform)
    polys = [shape(g) for g, _ in features.shapes(sub.astype(np.uint8), mask=sub, transform=wt)]
    geom = unary_union(polys)
    return geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])


def _scene_origin(seed: int) -> tuple[float, float]:
    """A plausible UTM (north) upper-left corner, deterministic per seed, on a 10 m grid."""
    r = np.random.default_rng(np.random.SeedSequence([seed, 0x0816]))
    return float(300000 + 10 * r.integers(0, 40000)), float(5000000 + 10 * r.integers(0, 40000))


def _write_geotiff(path: Path, img: np.ndarray, transform: Any, crs: Any) -> None:
    import rasterio

    tmp = path.with_name(f".{path.name}.tmp")
    count = img.shape[2]  # 3 (RGB), 4 (RGB + NIR) or 1 (panchromatic)
    profile = {"driver": "GTiff", "width": img.shape[1], "height": img.shape[0], "count": count,
               "dtype": "uint8", "crs": crs, "transform": transform, "nodata": 0,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "interleave": "pixel", "photometric": "RGB" if count == 3 else "MINISBLACK"}
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(img.transpose(2, 0, 1))
            if count != 3:
                dst.descriptions = ("red", "green", "blue", "nir")[:count] if count == 4 \
                    else ("pan",)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def targets_path(out_tif: str | os.PathLike[str]) -> Path:
    """``OUT.tif`` -> ``OUT.tif.targets.gpkg`` (the targets layer beside a scene)."""
    p = Path(out_tif)
    return p.with_name(p.name + ".targets.gpkg")


def objects_path(out_tif: str | os.PathLike[str]) -> Path:
    """``OUT.tif`` -> ``OUT.tif.objects.gpkg`` (every object of a scene, layer ``objects``)."""
    p = Path(out_tif)
    return p.with_name(p.name + ".objects.gpkg")


def _write_objects(path: Path, scene: Scene, transform: Any, crs: Any) -> int:
    """Write every object of ``scene`` as a label layer (``objects``: id, category, area_m2,
    visible outline as a MultiPolygon); returns the number of objects written."""
    import geopandas as gpd
    from rasterio import features
    from rasterio.windows import Window, transform as win_transform
    from scipy import ndimage
    from shapely.geometry import MultiPolygon, shape
    from shapely.ops import unary_union

    rows = []
    for i, sl in enumerate(ndimage.find_objects(scene.label), start=1):
        if sl is None or i not in scene.categories:
            continue
        sub = scene.label[sl] == i
        wt = win_transform(Window(sl[1].start, sl[0].start, sub.shape[1], sub.shape[0]),
                           transform)
        polys = [shape(g) for g, _ in features.shapes(sub.astype(np.uint8), mask=sub,
                                                       transform=wt)]
        geom = unary_union(polys)
        geom = geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])
        rows.append({"object_id": i, "category": scene.categories[i],
                     "area_m2": float(geom.area), "geometry": geom})
    _write_gpkg_atomic(gpd.GeoDataFrame(rows, geometry="geometry", crs=crs), path, "objects")
    return len(rows)


def _write_gpkg_atomic(gdf: Any, path: Path, layer: str) -> None:
    """Write one GeoPackage layer to a hidden temporary file beside ``path``, then rename."""
    tmp = path.with_name(f".{path.stem}.tmp.gpkg")
    if tmp.exists():
        tmp.unlink()
    try:
        gdf.to_file(tmp, layer=layer, driver="GPKG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_targets(path: Path, rows: list[dict[str, Any]], crs: Any) -> None:
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(
        {k: [r[k] for r in rows] for k in ("target_id", "expression", "category", "type",
                                           "needs_disambiguation", "absent", "n_same_category",
                                           "area_m2")},
        geometry=[r["geometry"] for r in rows], crs=crs)
    _write_gpkg_atomic(gdf, path, "targets")


def _crs(epsg: int) -> Any:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_epsg(epsg)
    except CRSError as exc:
        raise UsageError(f"unknown EPSG code {epsg}") from exc
    if not crs.is_projected:
        raise UsageError(f"EPSG:{epsg} is not a projected CRS (metres needed for --gsd)")
    return crs


def write_scene(out_tif: str | os.PathLike[str], size: int = 4096, seed: int = 0, *,
                gsd: float = CHIP_GSD, nodata_margin: bool = True, epsg: int = 32633,
                n_targets: int = 6, n_absent: int = 2,
                progress: Callable[[int], None] | None = None,
                objects: bool = False, realism: str = "none",
                bands: str = "rgb") -> list[dict[str, Any]]:
    """Write a georeferenced scene GeoTIFF and ``<out_tif>.targets.gpkg`` (layer ``targets``).

    With ``objects``, also ``<out_tif>.objects.gpkg`` (layer ``objects``: every object of the
    scene with its ``category``, its visible outline and ``area_m2``), a complete label layer
    for ``rrsis-geo dataset build``. ``bands``: ``rgb``, ``rgbn`` (+ a near-infrared band,
    :func:`rrsis_geo.data.synth.sensor.nir_band`) or ``pan`` (one panchromatic band).

    GeoTIFF: 3-band uint8 RGB, tiled 512, deflate, nodata 0 (irregular margin), CRS ``epsg``
    with ``gsd`` m pixels. Targets layer: ``target_id, expression, category, type,
    needs_disambiguation, absent, n_same_category, area_m2`` and the referent's exact pixel
    outline as a MultiPolygon in the scene CRS (NULL geometry for ``absent`` rows).

    Args:
        progress: called with 1 after generating, writing the raster and writing the targets.

    Returns:
        The target rows (with shapely geometries).
    """
    crs = _crs(epsg)
    out = _check_out(out_tif)
    scene = generate_scene(seed, size, gsd=gsd, nodata_margin=nodata_margin,
                           n_targets=n_targets, n_absent=n_absent, realism=realism)
    if bands != "rgb":
        from rrsis_geo.data.synth.sensor import scene_bands

        scene.image = scene_bands(scene.image, scene.label, scene.categories, scene.valid, bands)
    if progress is not None:
        progress(1)
    rows = _write_scene_files(out, scene, crs, progress)
    if objects:
        from rasterio.transform import from_origin

        _write_objects(objects_path(out), scene,
                       from_origin(*_scene_origin(scene.seed), scene.gsd, scene.gsd), crs)
    return rows


def _check_out(out_tif: str | os.PathLike[str]) -> Path:
    out = Path(out_tif)
    if not out.parent.is_dir():
        raise UsageError(f"output folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; give a .tif path")
    return out


def _write_scene_files(out: Path, scene: Scene, crs: Any,
                       progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    from rasterio.transform import from_origin

    transform = from_origin(*_scene_origin(scene.seed), scene.gsd, scene.gsd)
    _write_geotiff(out, scene.image, transform, crs)
    if progress is not None:
        progress(1)
    rows = []
    for i, t in enumerate(scene.targets):
        geom = None if t.absent else _mask_polygon(scene.referent_mask(i), transform)
        rows.append({"target_id": i, "expression": t.expression, "category": t.category,
                     "type": t.type, "needs_disambiguation": t.needs_disambiguation,
                     "absent": t.absent, "n_same_category": t.n_same_category,
                     "area_m2": 0.0 if geom is None else float(geom.area), "geometry": geom})
    _write_targets(targets_path(out), rows, crs)
    if progress is not None:
        progress(1)
    return rows


def _mosaic_forbid(cat: str) -> frozenset[str]:
    # a car may be called "vehicle": then no truck or bus may appear in the other tiles either
    return frozenset(VEHICLES) if cat == "car" else frozenset({cat})


def generate_mosaic_3x3(seed: int, chip_size: int = 192) -> Scene:
    """A 3×3 grid of chips whose referent sits in exactly one tile.

    The referent tile is a ``category`` chip (its category appears once in that tile); the 8
    other tiles are ordinary chips drawn without that category, so the sentence has exactly
    one referent in the whole mosaic. One extra ``absent`` target names a category that no tile
    contains. ``details["tile"]`` = (row, col) of the referent's tile.
    """
    check_chip_size(chip_size)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, chip_size, 0x3A3]))
    tile = int(rng.integers(9))
    n = 3 * chip_size
    image = np.zeros((n, n, 3), np.uint8)
    label = np.zeros((n, n), np.int32)
    categories: dict[int, str] = {}
    ref_chip = None
    ref_id = 0
    for k in range(9):
        r, c = divmod(k, 3)
        sub_seed = int(rng.integers(0, 2**62))
        if k == tile:
            chip, lab, objs = make_chip(sub_seed, chip_size, "category",
                                         forbid=frozenset({"road"}), tag=0x3A4)
            ref_chip = chip
        else:
            assert ref_chip is not None or k < tile
            forbid = _mosaic_forbid(ref_chip.category) if ref_chip is not None else frozenset()
            chip, lab, objs = make_chip(sub_seed, chip_size, None, forbid=forbid, tag=0x3A5)
        offset = max(categories, default=0)
        sl = (slice(r * chip_size, (r + 1) * chip_size), slice(c * chip_size, (c + 1) * chip_size))
        image[sl] = chip.image
        label[sl] = np.where(lab > 0, lab + offset, 0)
        for o in objs:
            categories[o.id + offset] = o.category
        if k == tile:
            ref_id = int(label[sl][chip.mask][0])
    assert ref_chip is not None
    # tiles drawn before the referent tile were made without knowing its category: redraw any
    # that happen to contain it (deterministic: the seeds continue from the same generator)
    for k in range(tile):
        r, c = divmod(k, 3)
        sl = (slice(r * chip_size, (r + 1) * chip_size), slice(c * chip_size, (c + 1) * chip_size))
        ids = np.unique(label[sl])
        forbid = _mosaic_forbid(ref_chip.category)
        if not any(categories.get(int(i)) in forbid for i in ids if i):
            continue
        chip, lab, objs = make_chip(int(rng.integers(0, 2**62)), chip_size, None,
                                     forbid=forbid, tag=0x3A5)
        for i in ids:
            categories.pop(int(i), None)
        offset = max(categories, default=0)
        image[sl] = chip.image
        label[sl] = np.where(lab > 0, lab + offset, 0)
        for o in objs:
            categories[o.id + offset] = o.category
    present = set(categories.values())
    pool = [c for c in ("storage tank", "tennis court", "basketball court", "pond", "truck",
                        "bus") if c not in present] + ABSENT_ONLY_WORDS
    absent_cat = str(pool[int(rng.integers(len(pool)))])
    expr, etype = _absent_expression(rng, absent_cat)
    expr = expr.replace(" of the scene", " of the image")
    targets = [
        SceneTarget(expression=ref_chip.expression, category=ref_chip.category, type="category",
                    needs_disambiguation=False, absent=False, referent_id=ref_id,
                    n_same_category=1, details={"tile": divmod(tile, 3)}),
        SceneTarget(expression=expr, category=absent_cat, type=etype,
                    needs_disambiguation=False, absent=True),
    ]
    return Scene(image=image, valid=np.ones((n, n), bool), label=label, targets=targets,
                 gsd=CHIP_GSD, seed=seed, categories=categories)


def write_mosaic_3x3(out_tif: str | os.PathLike[str], seed: int = 0, chip_size: int = 192, *,
                     epsg: int = 32633) -> list[dict[str, Any]]:
    """Write :func:`generate_mosaic_3x3` as a GeoTIFF + ``.targets.gpkg`` (as :func:`write_scene`)."""
    crs = _crs(epsg)
    out = _check_out(out_tif)
    return _write_scene_files(out, generate_mosaic_3x3(seed, chip_size), crs)
