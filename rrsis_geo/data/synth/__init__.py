"""Synthetic aerial referring scenes: chips for training/evaluation and large georeferenced scenes.

A procedural renderer (numpy only) draws textured ground, a road with lane markings, buildings
(rectangles, L-shapes, gable or flat roofs) with cast shadows, cars/trucks/buses, round tree
canopies, ponds, storage tanks and tennis/basketball courts. Every sample comes with ONE referring
expression, the exact mask of its referent and the union mask of every object of the named
category (for the "all objects of that category" baseline).

Public API:
    generate_chip(seed, size=192, *, etype=None, realism="none") -> Chip
    write_chips(out_dir, count, size=192, seed=0, split="train", progress=None,
                absent_fraction=0.0, realism="none") -> records
    generate_scene(seed, size=4096, *, gsd=CHIP_GSD, nodata_margin=True, n_targets=6,
                   n_absent=2) -> Scene
    write_scene(out_tif, size=4096, seed=0, *, gsd=CHIP_GSD, nodata_margin=True, epsg=32633,
                n_targets=6, n_absent=2, progress=None) -> rows   (+ targets_path(out_tif))
    generate_mosaic_3x3(seed, chip_size=192) -> Scene;  write_mosaic_3x3(out_tif, seed, ...)

Modules, in dependency order: :mod:`~rrsis_geo.data.synth.vocabulary` (scale, categories, words),
:mod:`~rrsis_geo.data.synth.canvas` (objects, occupancy, shapes, region/relation predicates,
placement), :mod:`~rrsis_geo.data.synth.scenarios` (referent + distractors per expression type),
:mod:`~rrsis_geo.data.synth.expressions` (sentences), :mod:`~rrsis_geo.data.synth.absent`
(negative chips), :mod:`~rrsis_geo.data.synth.rendering` (pixels),
:mod:`~rrsis_geo.data.synth.chips` (generate_chip, write_chips) and
:mod:`~rrsis_geo.data.synth.scenes` (scenes, mosaics and their GeoTIFF/GeoPackage files).
``realism=`` of chips and scenes (``--realism``): :mod:`~rrsis_geo.data.synth.look` picks the
parts, :mod:`~rrsis_geo.data.synth.textures` (photographic texture bank, ``bank/``) and
:mod:`~rrsis_geo.data.synth.sensor` (sun/off-nadir geometry, sensor effects, extra bands) draw
them; ``none`` leaves the procedural renderer untouched.

Ground scale (GSD): chips represent :data:`CHIP_GSD` = 0.25 m per pixel, so a car is about
18 x 8 px, a truck 42 x 10, a bus 48 x 11, a building 26-88 px long, a storage tank 26-76 px
across, a tennis court 96 x 44 px, and a 192 px chip covers 48 m x 48 m. Scenes use the same
scale by default (pixel sizes identical to the chips); another ``gsd`` keeps objects at their
metric size (0.5 m/px halves every object in pixels).

Frame conventions: image rows grow downwards; "top", "upper", "north" mean small row numbers
(north = up), "left"/"west" small column numbers. Position words use the object's mask centroid
in frame fractions: "left" = x < 0.40 with every same-category distractor at x > 0.55 (corners:
< 0.45 on both axes, distractors > 0.55 on either), "centre" = within 0.15 of the middle on both
axes (distractors > 0.30 off). Size words need an area ratio >= 1.8. Relations: "left of" = the
referent's box ends left of the anchor's box (rows overlapping within 20 px), distractors start
right of it; "next to" = box gap <= 10 px, distractors >= 36 px away; "on the road" = 90 % on it.

Expression types (field ``type``) and templates ({n} category word, {c} colour, {z} size word,
{r} region phrase, {rel} relation, {a} anchor):
    category          the {n} | the only {n} | the {n} in the image     (one object of that kind)
    attribute         the {c} {n} | the {n} that is {c} | {c} {n} | the building with the {c}
                      roof | the {c} roofed building | the {z} {n} | the {n} that is the {z} |
                      the {z} {c} {n} | the {c} {n} that is {z}
    spatial-absolute  the {n} {r} | the {n} located {r}
    spatial-relative  the {n} {rel} the {a} | the {n} that is {rel} the {a} | the car (driving)
                      on the road
    combined          the {c|z} {n} {r} | the {c|z} {n} located {r}
Words: categories building, car (also "vehicle" when no truck/bus is present), truck, bus, tree,
storage tank / tank, tennis court, basketball court, pond / water body, road; colours red,
white, grey/gray, blue, brown, black/dark, yellow, green, orange; sizes large, big, small,
little (bigger/larger/smaller for pairs), largest, biggest, smallest; regions e.g. "on the
left", "in the west", "in the upper left", "in the top left corner", "in the north-west",
"in the middle" (scenes: "in the north-east of the scene", ...); relations left of, to the left
of, west of, right of, east of, above, north of, below, south of, next to, beside, near,
close to. All types except ``category`` place 1-3 same-category distractors that differ in the
named attribute/position (``needs_disambiguation = True``, ~70 % of chips).

Negative chips (type ``absent``, only on request: ``generate_chip(etype="absent")`` or
``write_chips(absent_fraction=F)``): the scene is built exactly like a positive chip's, but the
sentence names something the chip does not contain and the mask is EMPTY, so a model run tile
by tile over a large scene learns to paint nothing where the referent is not. Kinds
(``details["absent_kind"]`` / ``details["kind"]``): (a) ``category`` - a category with no object
in the chip (a drawable one or an :data:`ABSENT_ONLY_WORDS` word), in plain/colour/size/region/
relation templates; (b) ``attribute`` - a present category with a palette colour none of its
objects has ("the blue building" when no building is blue); (c) ``spatial`` - a present category
with a region phrase all its objects are clearly out of (the distractor rule ``region_out``).
``category_union_mask`` is the union of the named category (empty for (a)).
"""

from rrsis_geo.data.synth.canvas import Chip
from rrsis_geo.data.synth.chips import chip_is_absent, chip_seed, generate_chip, write_chips
from rrsis_geo.data.synth.scenes import (
    Scene,
    SceneTarget,
    generate_mosaic_3x3,
    generate_scene,
    objects_path,
    targets_path,
    write_mosaic_3x3,
    write_scene,
)
from rrsis_geo.data.synth.vocabulary import CHIP_GSD

__all__ = [
    "CHIP_GSD",
    "Chip",
    "Scene",
    "SceneTarget",
    "chip_is_absent",
    "chip_seed",
    "generate_chip",
    "generate_mosaic_3x3",
    "generate_scene",
    "objects_path",
    "targets_path",
    "write_chips",
    "write_mosaic_3x3",
    "write_scene",
]
