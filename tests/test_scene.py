"""Scene-level selection on hand-made probability maps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from rrsis_geo.inference.pipeline import SegmentOptions
from rrsis_geo.geo.tiling import centred_origin
from rrsis_geo.inference.scene import SceneSelector, SceneSource
from rrsis_geo.inference.scoring import (class_factor, language_agreement, relation_agreement,
                                         select_objects, shape_margin, size_margin)
from rrsis_geo.text.scene_words import (CLASS_MIN_M2, MIN_OBJECT_M2, Relation, check_prompts,
                                        named_class, parse_relation, parse_scene_query,
                                        referent_min_area, rival_classes, tile_expression)
from rrsis_geo.progress import Reporter


class ArrayProb:
    def __init__(self, arr):
        self.arr = arr.astype(np.float32)
        self.height, self.width = arr.shape

    def read(self, rows=None, cols=None, **_):
        return self.arr[rows or slice(None), cols or slice(None)]


def grid_for(arr):
    return SimpleNamespace(width=arr.shape[1], height=arr.shape[0],
                           transform=from_origin(500000, 5000000, 0.5, 0.5),
                           crs=CRS.from_epsg(32633))


def run_select(arr, expression="the building", **kw):
    opts = SegmentOptions(tile_size=max(arr.shape), simplify=0.0, **kw)  # one frame: no global
    sel = SceneSelector(SimpleNamespace(input_size=max(arr.shape)), opts, Reporter("none"))
    return sel.select(SceneSource(None, None, grid_for(arr), None, None, ArrayProb(arr)),
                      expression)


def blobs(*specs, shape=(200, 200)):
    """specs: (row0, col0, size, prob)."""
    a = np.zeros(shape, np.float32)
    for r, c, s, p in specs:
        a[r:r + s, c:c + s] = p
    return a


def test_single_keeps_most_confident():
    objs = run_select(blobs((10, 10, 20, 0.7), (100, 100, 20, 0.95)))
    assert len(objs) == 1 and objs[0].rank == 1
    assert objs[0].score == pytest.approx(0.95, abs=1e-4)
    assert objs[0].geometry.bounds[0] == pytest.approx(500000 + 50.0)


def test_all_keeps_every_object_above_min_score_ranked():
    arr = blobs((10, 10, 20, 0.7), (100, 100, 20, 0.95), (150, 20, 20, 0.55))
    objs = run_select(arr, mode="all", min_score=0.6)
    assert [o.rank for o in objs] == [1, 2]
    assert [round(o.score, 2) for o in objs] == [0.95, 0.7]


def test_max_objects_caps_all_mode():
    arr = blobs((10, 10, 20, 0.7), (100, 100, 20, 0.95), (150, 20, 20, 0.8))
    objs = run_select(arr, mode="all", max_objects=2)
    assert len(objs) == 2 and [round(o.score, 2) for o in objs] == [0.95, 0.8]


def test_no_target_when_nothing_above_min_score():
    assert run_select(blobs((10, 10, 20, 0.55)), min_score=0.6) == []
    assert run_select(np.zeros((50, 60))) == []


def test_specks_are_ignored():
    objs = run_select(blobs((10, 10, 3, 0.99), (100, 100, 20, 0.8)))
    assert len(objs) == 1 and objs[0].score == pytest.approx(0.8, abs=1e-4)


def test_fragment_smaller_than_any_object_does_not_outrank_an_object():
    # 4 x 5 pixels of 0.5 m = 5 m², below MIN_OBJECT_M2: confident, but a fragment
    assert 4 * 5 * 0.25 < MIN_OBJECT_M2 < 20 * 20 * 0.25
    arr = blobs((100, 100, 20, 0.85))
    arr[10:14, 10:15] = 0.99
    (obj,) = run_select(arr)
    assert obj.score == pytest.approx(0.85, abs=1e-4)
    objs = run_select(arr, "the red thing", mode="all")  # no class word: MIN_OBJECT_M2
    assert [round(o.score, 3) for o in objs] == [0.85, round(0.99 * (5 / MIN_OBJECT_M2) ** 0.5, 3)]


def test_named_class_sets_the_smallest_plausible_object():
    # 12 x 12 pixels of 0.5 m = 36 m²: a whole car, but only a piece of a basketball court
    arr = blobs((10, 10, 12, 0.95), (100, 100, 30, 0.8))  # 36 m² vs 225 m²
    (obj,) = run_select(arr, "the blue basketball court")
    assert obj.area_m2 == pytest.approx(225, rel=0.01)
    assert obj.score == pytest.approx(0.8, abs=1e-4)
    (obj,) = run_select(arr, "the blue car")
    assert obj.area_m2 == pytest.approx(36, rel=0.01)


@pytest.mark.parametrize("expr,area", [
    ("the blue basketball court located at the top of the scene", 100.0),
    ("the tennis courts", 100.0),
    ("the car near the building", CLASS_MIN_M2["car"]),  # the referent comes first
    ("the buses", CLASS_MIN_M2["bus"]),
    ("the water body that is the smallest", CLASS_MIN_M2["water body"]),
    ("the red thing in the north", MIN_OBJECT_M2),
    ("the scar", MIN_OBJECT_M2),  # whole words only
])
def test_referent_min_area(expr, area):
    assert referent_min_area(expr) == area


@pytest.mark.parametrize("expr,tiles_read", [
    ("the blue tennis court located in the east of the scene", "the blue tennis court"),
    ("the tank in the upper left corner of the image", "the tank"),
    ("the car on the left", "the car"),
    ("the truck in the scene", "the truck"),
    ("the storage tank that is the biggest", "the storage tank"),
    ("the smallest pond", "the pond"),
    ("the building in the far north-east", "the building"),
    # relational phrases are for the tiles: both objects are in view
    ("the car to the left of the truck", "the car to the left of the truck"),
    ("the building in the north of the pond", "the building in the north of the pond"),
    ("the large white building north of the roundabout",
     "the large white building north of the roundabout"),
    # nothing but an article would remain: unchanged
    ("the largest", "the largest"),
])
def test_tile_expression(expr, tiles_read):
    assert tile_expression(expr) == tiles_read


def test_scene_position_words_pick_the_matching_object():
    arr = blobs((10, 10, 20, 0.85), (160, 160, 20, 0.9))  # upper-left vs lower-right
    (obj,) = run_select(arr, "the building in the upper left of the scene")
    assert obj.geometry.bounds[0] < 500000 + 50  # the upper-left one, though less confident
    (obj,) = run_select(arr, "the building in the south-east")
    assert obj.geometry.bounds[0] > 500000 + 50


def test_superlative_picks_by_area():
    arr = blobs((10, 10, 12, 0.9), (100, 100, 40, 0.8))
    (obj,) = run_select(arr, "the largest storage tank")
    assert obj.area_m2 == pytest.approx(40 * 40 * 0.25, rel=0.01)
    (obj,) = run_select(arr, "the smallest storage tank")
    assert obj.area_m2 == pytest.approx(12 * 12 * 0.25, rel=0.01)


def test_language_never_promotes_an_unsupported_object():
    arr = blobs((10, 10, 20, 0.3), (160, 160, 20, 0.9))
    (obj,) = run_select(arr, "the building in the upper left", min_score=0.5)
    assert obj.geometry.bounds[0] > 500000 + 50


@pytest.mark.parametrize("expr,direction,centre,sup", [
    ("the tank in the north-east of the scene", (0.7071, -0.7071), False, None),
    ("the car left of the truck", None, False, None),
    ("the car to the left of the bus", None, False, None),
    ("the building on the left", (-1.0, 0.0), False, None),
    ("the pond in the middle of the image", None, True, None),
    ("the biggest building in the southern part", (0.0, 1.0), False, "largest"),
    ("the tree north of the pond", None, False, None),
])
def test_parse_scene_query(expr, direction, centre, sup):
    q = parse_scene_query(expr)
    if direction is None:
        assert q.direction is None
    else:
        assert q.direction == pytest.approx(direction, abs=1e-3)
    assert q.centre == centre and q.superlative == sup


def test_language_agreement_range():
    q = parse_scene_query("the tank in the east")
    a = language_agreement(q, np.array([[0.1, 0.5], [0.9, 0.5], [0.5, 0.5]]), np.ones(3))
    assert a.tolist() == pytest.approx([0.0, 1.0, 0.5])


def test_select_objects_plain():
    c = [{"score": 0.6, "area_m2": 1}, {"score": 0.9, "area_m2": 1}, {"score": 0.2}]
    assert [x["score"] for x in select_objects(c, "all", None, 0.5)] == [0.9, 0.6]
    assert [x["rank"] for x in select_objects(c, "single", None, 0.5)] == [1]
    assert select_objects(c, "single", None, 0.95) == []


@pytest.mark.parametrize("expr, named", [
    ("the grey tank near the pond", "storage tank"),
    ("the pond near the grey tank", "pond"),
    ("the water body in the north", "pond"),
    ("two cars next to the building", "car"),
    ("the basketball court", "basketball court"),
    ("the red thing", None),
])
def test_named_class(expr, named):
    classes = ["building", "car", "vehicle", "storage tank", "pond", "basketball court",
               "tennis court"]
    assert named_class(expr, classes) == named


def test_named_class_needs_the_class_in_the_models_list():
    assert named_class("the water body", ["building", "car"]) is None
    assert named_class("the building", ()) is None


def test_rival_classes_skip_the_named_class_and_its_family():
    classes = ["road", "vehicle", "car", "truck", "building", "road marking", "tree"]
    # a car is a vehicle (not a rival) but not a truck (a rival: the usual confusion)
    assert rival_classes("car", classes) == ["road", "truck", "building", "road marking", "tree"]
    assert rival_classes("vehicle", classes) == ["road", "building", "road marking", "tree"]
    assert rival_classes("road", classes) == ["vehicle", "car", "truck", "building", "tree"]
    assert rival_classes("building", classes) == [c for c in classes if c != "building"]


def test_class_factor_is_monotone_in_the_margin():
    f = class_factor(np.array([-6.0, -1.0, 0.0, 1.0, 6.0]))
    assert np.all(np.diff(f) > 0) and f[0] < 0.05 and f[-1] > 0.95 and 0 < f.min()


@pytest.mark.parametrize("centre, size, length, origin", [
    (50, 20, 100, 40), (3, 20, 100, 0), (98, 20, 100, 80), (5, 20, 10, -5)])
def test_centred_origin(centre, size, length, origin):
    assert centred_origin(centre, size, length) == origin


@pytest.mark.parametrize("expr, anchor, direction", [
    ("the storage tank next to the pond", "pond", None),
    ("the truck near the water body", "pond", None),
    ("the bus that is close to the tennis court", "tennis court", None),
    ("the car to the left of the bus", "bus", (-1.0, 0.0)),
    ("the car north of the building", "building", (0.0, -1.0)),
    ("the car in the north of the scene", None, None),  # a position, not a relation
    ("the car near the windmill", None, None),  # anchor not a class of the model
])
def test_parse_relation(expr, anchor, direction):
    classes = ["car", "bus", "truck", "building", "pond", "storage tank", "tennis court"]
    rel = parse_relation(expr, classes)
    assert (rel.anchor if rel else None) == anchor
    if rel:
        assert rel.direction == direction


def _maps(anchor_box=None, size=64):
    """[2, T, T] prompt margins: prompt 0 = the referent's class, prompt 1 = the anchor's."""
    maps = np.full((2, size, size), -5.0, np.float32)
    if anchor_box:
        r0, c0, r1, c1 = anchor_box
        maps[1, r0:r1, c0:c1] = 5.0
    return maps


def test_relation_agreement_near_decreases_with_the_gap():
    mask = np.zeros((64, 64), bool)
    mask[28:36, 28:36] = True
    near = Relation("pond", None, "near")
    touching = relation_agreement(_maps((28, 36, 36, 44)), mask, 1, near)
    apart = relation_agreement(_maps((28, 50, 36, 58)), mask, 1, near)
    assert touching > apart > 0
    assert relation_agreement(_maps(), mask, 1, near) == 0.0  # no anchor in the window
    assert relation_agreement(_maps((0, 0, 2, 2)), mask, 1, near) == 0.0  # a speck is not one


def test_relation_agreement_direction():
    mask = np.zeros((64, 64), bool)
    mask[28:36, 10:18] = True  # the candidate is left of an anchor at columns 40-48
    maps = _maps((28, 40, 36, 48))
    left = relation_agreement(maps, mask, 1, Relation("bus", (-1.0, 0.0), "left of"))
    right = relation_agreement(maps, mask, 1, Relation("bus", (1.0, 0.0), "right of"))
    assert left > 0.9 and right < 0.1


@pytest.mark.parametrize("expr, rest", [
    ("the bus that is next to the tennis court", "the bus"),
    ("the truck, which is near the water body", "the truck"),
    ("the red car parked left of the bus", "the red car"),
])
def test_parse_relation_referent_text(expr, rest):
    classes = ["car", "bus", "truck", "pond", "tennis court"]
    assert parse_relation(expr, classes).referent_text == rest


def test_model_classes_from_a_list_a_list_name_or_nothing():
    from rrsis_geo.text.classes import RRSISD_CLASSES

    def classes(meta):
        return SceneSelector(SimpleNamespace(meta=meta), SegmentOptions(),
                             Reporter("none")).model_classes()

    assert classes({"classes": ["pond", "car"]}) == ("pond", "car")
    assert classes({"classes": "rrsisd"}) == RRSISD_CLASSES  # official checkpoints name a list
    assert "building" in classes({"input_size": 480})  # unsaid: refsegrs, as for decoupling
    assert classes(None) == () and classes({"classes": "unknown"}) == ()


def test_class_check_asks_in_the_plural_in_mode_all():
    # a window around one of many matches holds several: "the tree" would make the model pick
    # one of them and fail the rest
    assert check_prompts(["tree", "bus", "storage tank"], "all") == [
        "the trees", "the buses", "the storage tanks"]
    assert check_prompts(["tree", "bus"], "single") == ["the tree", "the bus"]


def test_size_margin_only_lowers_vehicles_smaller_than_their_kind():
    kinds = ["car", "van", "truck", "bus", "building"]
    margins = [size_margin(a, "truck", kinds) for a in (6.0, 9.0, 12.0, 16.0, 25.0, 60.0)]
    assert margins[0] < -3 and margins[1] < -3  # a car's footprint is no truck
    assert all(a <= b for a, b in zip(margins, margins[1:]))  # larger is never worse
    assert margins[4] == margins[5] == 0.0  # typical or larger: no say (merged parked cars)
    assert size_margin(9.0, "truck", ["building", "tree"]) == 0.0  # no smaller kind to be
    assert size_margin(30.0, "car", kinds) == 0.0  # the smallest kind is never too large
    assert size_margin(9.0, "building", kinds) == 0.0  # sizes of vehicle kinds only
    assert size_margin(20.0, "bus", kinds) < 0  # a truck's footprint


def test_shape_margin_only_lowers_vehicles_less_elongated_than_their_kind():
    kinds = ["car", "van", "truck", "bus", "building"]
    ratios = (1.0, 1.5, 2.5, 3.2, 4.5, 8.0)
    margins = [shape_margin(10.0 * r, 10.0, "truck", kinds) for r in ratios]
    assert margins[0] < -6 and margins[1] < -4  # square blobs: small buildings
    assert margins[2] < -2  # a car's 2.5 : 1
    assert all(a <= b for a, b in zip(margins, margins[1:]))
    assert margins[4] == margins[5] == 0.0  # a truck's, or longer
    assert shape_margin(12.0, 10.0, "car", []) < -2  # a square is no car either
    assert shape_margin(25.0, 10.0, "car", kinds) == 0.0
    assert shape_margin(10.0, 10.0, "building", kinds) == 0.0  # vehicle kinds only


def test_vehicle_margins_skip_the_shape_below_three_native_pixels():
    from rrsis_geo.geo.vectorize import Candidate

    def cand(length, width):  # a filled length x width rectangle's moments
        return Candidate(1, 1.0, 1.0, (0, 0, 1, 1), (0.0, 0.0), [], 1,
                         moments_px=(length ** 2 / 12, width ** 2 / 12, 0.0))

    square = [cand(20.0, 20.0)]  # 20 work pixels: 5 m at 0.25 m
    fine = SimpleNamespace(scale=1.0)  # native 0.25 m: 20 pixels wide
    coarse = SimpleNamespace(scale=5.0)  # native 1.25 m: 4 pixels; 8.0: 2.5, too few
    assert cand(40.0, 10.0).axes_px == pytest.approx((40.0, 10.0))
    kw = {"named": "truck", "rivals": ["car", "building"]}
    assert SceneSelector.vehicle_margins(fine, square, [25.0], **kw)[0] < -6
    assert SceneSelector.vehicle_margins(coarse, square, [25.0], **kw)[0] < -6
    assert SceneSelector.vehicle_margins(SimpleNamespace(scale=8.0), square, [25.0],
                                         **kw)[0] == 0.0
    # the sizes and the shapes name the same kinds (vehicle_margins returns early for others)
    from rrsis_geo.text.scene_words import VEHICLE_ELONGATION, VEHICLE_TYPICAL_M2

    assert set(VEHICLE_TYPICAL_M2) == set(VEHICLE_ELONGATION)
    assert not SceneSelector.vehicle_margins(fine, square, [25.0], "building", ["car"]).any()
