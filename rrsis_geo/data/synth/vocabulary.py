"""Vocabulary of the synthetic generator: scale, categories, palettes, sizes and the words
and phrases its sentences use (categories, colours, sizes, regions, relations), with the
weights that choose expression types, referents and clutter.
"""

from __future__ import annotations

CHIP_GSD = 0.25
"""Metres per pixel that generated chips represent (also the default scene GSD)."""

MIN_CHIP_SIZE = 128
MAX_CHIP_SIZE = 2048
MIN_SCENE_SIZE = 512

# --------------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (176, 54, 44),
    "white": (236, 236, 230),
    "grey": (132, 132, 134),
    "blue": (50, 88, 172),
    "brown": (112, 74, 44),
    "black": (34, 34, 38),
    "yellow": (228, 194, 36),
    "green": (52, 128, 70),
    "orange": (214, 116, 38),
}
# a tank's "grey" is lighter than a car's so it still reads as a metal roof
TANK_GREY = (150, 152, 156)
COURT_RED = (170, 84, 58)  # clay

PALETTES: dict[str, list[str]] = {
    "building": ["red", "white", "grey", "blue", "brown"],
    "car": ["red", "white", "black", "blue", "yellow", "grey"],
    "truck": ["white", "red", "blue", "yellow"],
    "bus": ["yellow", "red", "white", "blue"],
    "storage tank": ["white", "grey"],
    "tennis court": ["green", "blue", "red"],
    "basketball court": ["orange", "blue", "green"],
}
COLOUR_WORDS: dict[str, list[str]] = {
    "grey": ["grey", "gray"],
    "red": ["red"],
    "white": ["white"],
    "blue": ["blue"],
    "brown": ["brown"],
    "black": ["black", "dark"],
    "yellow": ["yellow"],
    "green": ["green"],
    "orange": ["orange"],
}

CATEGORIES = [
    "building", "car", "truck", "bus", "tree", "storage tank", "tennis court",
    "basketball court", "pond", "road",
]
VEHICLES = ("car", "truck", "bus")
#: look-alike categories, for "confusable" negatives (``synth chips --confusable-negatives``):
#: at 0.25 m a car, a truck and a bus differ by length and shape only, the two courts by markings
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "car": ("truck", "bus"), "truck": ("car", "bus"), "bus": ("car", "truck"),
    "tennis court": ("basketball court",), "basketball court": ("tennis court",),
}
#: vehicle footprint at chip scale: (length range px, width range px, height px for the shadow)
VEHICLE_DIMS = {
    "car": ((17, 20), (7.5, 8.5), 2.0),
    "truck": ((38, 46), (10, 11), 4.0),
    "bus": ((46, 52), (10.5, 11.5), 4.5),
}
FLAT = ("pond", "tennis court", "basketball court")

CATEGORY_WORDS: dict[str, list[str]] = {
    "building": ["building"],
    "car": ["car"],
    "truck": ["truck"],
    "bus": ["bus"],
    "tree": ["tree"],
    "storage tank": ["storage tank", "storage tank", "tank"],
    "tennis court": ["tennis court"],
    "basketball court": ["basketball court"],
    "pond": ["pond", "pond", "water body"],
    "road": ["road"],
}
# RRSIS-D words never rendered: used by "absent" scene targets
ABSENT_ONLY_WORDS = ["airplane", "ship", "windmill", "bridge", "chimney", "dam"]

REGIONS = ["left", "right", "top", "bottom", "upper left", "upper right", "lower left",
           "lower right", "center"]
REGION_PHRASES: dict[str, list[str]] = {
    "left": ["on the left", "on the left side", "in the west", "at the left"],
    "right": ["on the right", "on the right side", "in the east", "at the right"],
    "top": ["at the top", "in the upper part", "in the north", "at the top of the image"],
    "bottom": ["at the bottom", "in the lower part", "in the south", "at the bottom of the image"],
    "upper left": ["in the upper left", "in the top left corner", "in the north-west",
                   "at the top left"],
    "upper right": ["in the upper right", "in the top right corner", "in the north-east",
                    "at the top right"],
    "lower left": ["in the lower left", "in the bottom left corner", "in the south-west",
                   "at the bottom left"],
    "lower right": ["in the lower right", "in the bottom right corner", "in the south-east",
                    "at the bottom right"],
    "center": ["in the middle", "in the center", "in the centre of the image"],
}
SCENE_REGION_PHRASES: dict[str, list[str]] = {
    "left": ["in the west of the scene", "on the western side of the scene",
             "on the left of the scene"],
    "right": ["in the east of the scene", "on the eastern side of the scene",
              "on the right of the scene"],
    "top": ["in the north of the scene", "in the northern part of the scene",
            "at the top of the scene"],
    "bottom": ["in the south of the scene", "in the southern part of the scene",
               "at the bottom of the scene"],
    "upper left": ["in the north-west of the scene", "in the upper left of the scene"],
    "upper right": ["in the north-east of the scene", "in the upper right of the scene"],
    "lower left": ["in the south-west of the scene", "in the lower left of the scene"],
    "lower right": ["in the south-east of the scene", "in the lower right of the scene"],
    "center": ["in the middle of the scene", "in the centre of the scene"],
}
RELATION_PHRASES: dict[str, list[str]] = {
    "left": ["left of", "to the left of", "west of", "on the left of"],
    "right": ["right of", "to the right of", "east of", "on the right of"],
    "above": ["above", "north of", "to the north of"],
    "below": ["below", "south of", "to the south of"],
    "near": ["next to", "beside", "near", "close to"],
    "on": ["on"],
}
# referent category -> anchors it may be related to
RELATION_ANCHORS: dict[str, list[str]] = {
    "car": ["truck", "bus", "building", "pond", "road"],
    "truck": ["building", "pond", "storage tank"],
    "bus": ["building", "pond"],
    "tree": ["pond", "building", "tennis court", "basketball court"],
    "building": ["pond", "tennis court", "storage tank", "basketball court"],
    "storage tank": ["building", "pond"],
}

TYPE_WEIGHTS = {
    "category": 0.28, "attribute": 0.22, "spatial-absolute": 0.22, "spatial-relative": 0.14,
    "combined": 0.14,
}
# "absent" (negative) chips: never drawn by TYPE_WEIGHTS, only asked for (etype="absent" or
# write_chips(absent_fraction=...)); their sentence names something the chip does not contain
ABSENT_TYPE = "absent"
ABSENT_KIND_WEIGHTS = {"category": 0.4, "attribute": 0.3, "spatial": 0.3}
ABSENT_KIND_LETTER = {"category": "a", "attribute": "b", "spatial": "c"}
# how often each category is the referent (larger objects are favoured: they are what a small
# model can segment well; cars stay common enough to learn)
REFERENT_WEIGHTS = {
    "building": 0.22, "storage tank": 0.15, "car": 0.12, "tree": 0.09, "pond": 0.08,
    "tennis court": 0.07, "basketball court": 0.06, "truck": 0.08, "bus": 0.06, "road": 0.03,
}
CLUTTER_WEIGHTS = {
    "tree": 0.34, "building": 0.2, "car": 0.16, "storage tank": 0.06, "truck": 0.05,
    "bus": 0.04, "pond": 0.06, "tennis court": 0.045, "basketball court": 0.045,
}

# sizes in chip pixels (CHIP_GSD), scaled by canvas.scale for other GSDs
SIZE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    # building: length range; width derived
    "building": {"small": (26, 34), "medium": (38, 60), "large": (66, 88)},
    "storage tank": {"small": (13, 17), "medium": (19, 25), "large": (29, 38)},  # radius
    "tree": {"small": (7, 9.5), "medium": (10, 14), "large": (16, 21)},  # radius
    "pond": {"small": (17, 22), "medium": (24, 34), "large": (38, 50)},  # radius
}
OBJECT_HALF_EXTENT = {  # rough max half-size at chip scale, used to filter what fits a chip
    "building": 44, "car": 10, "truck": 24, "bus": 26, "tree": 21, "storage tank": 38,
    "tennis court": 48, "basketball court": 53, "pond": 55, "road": 0,
}
