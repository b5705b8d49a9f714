"""Dataset readers on tiny fixtures written in exactly the RefSegRS and RRSIS-D formats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from rrsis_geo.data.referring import collate, open_dataset
from rrsis_geo.data.refsegrs import RefSegRSDataset
from rrsis_geo.data.rrsisd import (
    RRSISDDataset,
    rle_decode,
    segmentation_to_mask,
)
from rrsis_geo.errors import BadInputError
from rrsis_geo.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from rrsis_geo.text import decouple


def _denorm(image: torch.Tensor) -> np.ndarray:
    """[3,H,W] normalized float → uint8-valued float array [H,W,3]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) * 255).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------ RefSegRS


def _write_refsegrs(root: Path, size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    data = {}
    for rid in ("7", "12", "30"):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        y, x = rng.integers(0, size - 4, 2)
        mask[y : y + 4, x : x + 5] = 255
        mask[0, 0] = 40  # below the >50 threshold: background
        Image.fromarray(img).save(root / "images" / f"{rid}.tif")
        Image.fromarray(mask).save(root / "masks" / f"{rid}.tif")
        data[rid] = (img, mask)
    (root / "output_phrase_train.txt").write_text(
        "7 the vehicle on the left of the road\n12 the building in the upper left\n"
    )
    (root / "output_phrase_test.txt").write_text("30 the trees beside the road\n")
    # metadata for id 12 (our generator's extra file); the union mask is a 0/255 TIFF
    union = np.zeros((size, size), dtype=np.uint8)
    union[:8] = 255
    Image.fromarray(union).save(root / "masks" / "12_union.tif")
    rows = [
        {"id": "12", "split": "train", "expression": "the building in the upper left",
         "category": "building", "type": "spatial", "needs_disambiguation": True,
         "union_mask": "masks/12_union.tif"},
        {"id": "30", "split": "test", "category": "tree", "type": "simple",
         "needs_disambiguation": False},
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return data


def test_refsegrs_round_trip(tmp_path: Path) -> None:
    data = _write_refsegrs(tmp_path)
    ds = RefSegRSDataset(tmp_path, "train", img_size=16)
    assert len(ds) == 2
    s = ds[0]
    img, mask = data["7"]
    assert s["id"] == "7" and s["expression"] == "the vehicle on the left of the road"
    assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
    np.testing.assert_allclose(_denorm(s["image"]), img, atol=1e-3)
    assert s["mask"].dtype == torch.long
    assert torch.equal(s["mask"], torch.from_numpy((mask > 50).astype(np.int64)))
    assert s["mask"][0, 0] == 0
    ref = decouple(s["expression"], classes="refsegrs", max_tokens=20)
    for k in ("input_ids", "attention_mask", "object_mask", "position_mask"):
        assert torch.equal(s[k], getattr(ref, k)), k
    assert s["type"] is None and s["union_mask"] is None

    m = ds[1]
    assert m["type"] == "spatial" and m["category"] == "building"
    assert m["needs_disambiguation"] is True
    assert m["union_mask"].sum().item() == 8 * 16

    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["input_ids"].shape == (2, 20)
    # not every sample has a union mask: kept as a list
    assert batch["union_mask"][0] is None and torch.equal(batch["union_mask"][1], m["union_mask"])


def test_refsegrs_resize_and_splits(tmp_path: Path) -> None:
    _write_refsegrs(tmp_path, size=32)
    ds = open_dataset(tmp_path, "refsegrs", "test", img_size=8)
    assert len(ds) == 1
    s = ds[0]
    assert s["image"].shape == (3, 8, 8) and s["mask"].shape == (8, 8)
    assert set(s["mask"].unique().tolist()) <= {0, 1}
    assert s["type"] == "simple" and s["needs_disambiguation"] is False
    with pytest.raises(BadInputError, match="output_phrase_val"):
        RefSegRSDataset(tmp_path, "val")


def test_mixed_resolutions_record_the_median(tmp_path: Path) -> None:
    # chips at several ground resolutions (scale augmentation): the dataset's gsd is the
    # median sentence's, the one inference resamples to; one resolution is kept as it is
    _write_refsegrs(tmp_path)
    rows = [{"id": "7", "gsd": 0.15}, {"id": "12", "gsd": 0.25}, {"id": "30", "gsd": 0.25}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "output_phrase_train.txt").write_text(
        "7 the vehicle\n12 the building\n30 the tree\n")
    ds = RefSegRSDataset(tmp_path, "train", img_size=16)
    assert ds.info["gsd"] == pytest.approx(0.25)
    assert ds.info["gsd_range"] == pytest.approx([0.15, 0.25])
    ds = RefSegRSDataset(tmp_path, "test", img_size=16)
    assert ds.info["gsd"] == pytest.approx(0.25) and "gsd_range" not in ds.info


def test_brightness_augmentation_keeps_hue(tmp_path: Path) -> None:
    _write_refsegrs(tmp_path)
    plain = RefSegRSDataset(tmp_path, "train", img_size=16)[0]["image"]
    aug = RefSegRSDataset(tmp_path, "train", img_size=16, brightness=0.2, seed=3)[0]["image"]
    a, b = _denorm(plain), _denorm(aug)
    assert not np.allclose(a, b)
    bright = a.sum(-1) > 60
    ratio = (b[bright] + 1e-6) / (a[bright] + 1e-6)
    # one factor for all channels (up to uint8 rounding and clipping)
    assert np.median(np.abs(ratio[:, 0] - ratio[:, 1])) < 0.02


def test_mirror_expression_swaps_direction_words_only() -> None:
    from rrsis_geo.data.transforms import mirror_expression

    e = "the car north-west of the pond, left of the Upper building"
    assert mirror_expression(e, True, False) == ("the car north-east of the pond, right of the "
                                                  "Upper building")
    assert mirror_expression(e, False, True) == ("the car south-west of the pond, left of the "
                                                  "Lower building")
    assert mirror_expression(e, True, True) == ("the car south-east of the pond, right of the "
                                                 "Lower building")
    for expr in (e, "the topmost tank", "the westernmost tree at the bottom", "the trees"):
        for h, v in ((True, False), (False, True), (True, True)):
            assert mirror_expression(mirror_expression(expr, h, v), h, v) == expr
    # words that only contain a direction word stay as they are
    for expr in ("the bright rooftop", "the leftover northwestern", "the lowered barrier"):
        assert mirror_expression(expr, True, True) == expr
    assert mirror_expression("the building in the LEFT", True, False) == "the building in the RIGHT"


def _write_sided(root: Path, expressions: list[str], size: int = 16) -> np.ndarray:
    """One chip whose object sits in its upper left corner, with the given sentences."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, size, dtype=np.uint8)[None, :]  # a left-right ramp too
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[1:5, 2:7] = 255
    Image.fromarray(img).save(root / "images" / "1.tif")
    Image.fromarray(mask).save(root / "masks" / "1.tif")
    (root / "output_phrase_train.txt").write_text("".join(f"1 {e}\n" for e in expressions))
    return img


def test_flips_mirror_pixels_mask_and_sentence_together(tmp_path: Path) -> None:
    img = _write_sided(tmp_path, ["the building in the upper left", "the building"])
    ds = RefSegRSDataset(tmp_path, "train", img_size=16, flips=True, seed=5)
    plain = RefSegRSDataset(tmp_path, "train", img_size=16)
    assert ds.num_record_expressions == 2
    assert len(ds.expressions) == 5  # + upper right, lower left, lower right
    seen = set()
    for _ in range(40):
        for i in range(2):
            s = ds[i]
            m = s["mask"].numpy()
            ys, xs = np.nonzero(m)
            h = xs.mean() > 8
            v = ys.mean() > 8
            seen.add((i, h, v))
            want = np.flip(img, axis=1) if h else img
            want = np.flip(want, axis=0) if v else want
            np.testing.assert_allclose(_denorm(s["image"]), want, atol=0.01)
            if i == 0:
                assert s["expression"] == "the building in the " + (
                    ("lower" if v else "upper") + " " + ("right" if h else "left"))
            else:
                assert s["expression"] == "the building"  # nothing to mirror
            # the text tokens are those of the sentence that is returned
            ref = decouple(s["expression"], classes="refsegrs", max_tokens=ds.max_tokens)
            assert s["input_ids"].tolist() == list(ref.input_ids)
    assert len(seen) == 8  # every flip of both sentences was drawn
    # without flips nothing moves
    np.testing.assert_array_equal(plain[0]["mask"].numpy(), (np.array(
        Image.open(tmp_path / "masks" / "1.tif")) > 50).astype(np.uint8))


def test_colour_jitter_spares_colour_sentences(tmp_path: Path) -> None:
    from rrsis_geo.data.transforms import colour_jitter, names_colour

    _write_sided(tmp_path, ["the red building", "the building on the left"])
    plain = RefSegRSDataset(tmp_path, "train", img_size=16)
    ds = RefSegRSDataset(tmp_path, "train", img_size=16, colour=0.5, seed=2)
    base = _denorm(plain[0]["image"])
    changed = 0
    for _ in range(10):
        np.testing.assert_allclose(_denorm(ds[0]["image"]), base, atol=0.01)  # "red": untouched
        s = ds[1]
        changed += not np.allclose(_denorm(s["image"]), base, atol=0.6)
        np.testing.assert_array_equal(s["mask"].numpy(), plain[1]["mask"].numpy())
    assert changed == 10
    assert names_colour("the Dark tree") and names_colour("the greyish roof")
    assert not names_colour("the largest tree on the right")
    # grey now and then (probability amount/3), otherwise the channels differ
    image = torch.from_numpy(base.round().astype(np.uint8).transpose(2, 0, 1).copy())
    g = torch.Generator().manual_seed(0)
    outs = [colour_jitter(image, 0.9, g) for _ in range(60)]
    greys = sum(bool((o[0] == o[1]).all() and (o[1] == o[2]).all()) for o in outs)
    assert 8 <= greys <= 30
    assert colour_jitter(image, 0.0) is image


# ------------------------------------------------------------------------------------ RLE codec


def _rle_encode(mask: np.ndarray, compressed: bool = True) -> dict:
    """COCO RLE of a binary mask: pycocotools' compressed string, or the run list."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    flat = (mask.T.reshape(-1) > 0).astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": rle["size"], "counts": [0, *runs] if flat[0] else runs}


def _rle_string(runs: list[int], n: int) -> bytes:
    """pycocotools' compressed string of a 1 x n mask given as runs."""
    return coco_mask.frPyObjects({"size": [1, n], "counts": runs}, 1, n)["counts"]



def test_rle_string_codec_hand_values() -> None:
    # hand-encoded: 2,3,4 are single chars; 40 = 'X' (8 | more-bit) + '1'; from the 4th count on
    # values are deltas to the count two before: 3 - 5 = -2 -> 'N'. The same strings decode to
    # the same masks as the run lists.
    for runs, text in (([2, 3, 4], "234"), ([40], "X1"), ([5, 5, 5, 3], "555N")):
        n = sum(runs)
        assert _rle_string(runs, n) == text.encode()
        assert np.array_equal(rle_decode({"size": [1, n], "counts": text}),
                              rle_decode({"size": [1, n], "counts": runs}))
    assert rle_decode({"size": [1, 40], "counts": "X1"}).sum() == 0
    assert rle_decode({"size": [1, 18], "counts": "555N"}).tolist() == [[0] * 5 + [1] * 5
                                                                        + [0] * 5 + [1] * 3]


def test_rle_decode_column_major() -> None:
    # 2x3 mask, column-major runs: 1 zero, 2 ones, 3 zeros -> pixels (1,0),(0,1) set
    m = rle_decode({"size": [2, 3], "counts": [1, 2, 3]})
    assert m.tolist() == [[0, 1, 0], [1, 0, 0]]
    m2 = rle_decode({"size": [2, 3], "counts": "123"})
    assert m2.tolist() == m.tolist()
    rng = np.random.default_rng(1)
    for compressed in (True, False):
        mask = (rng.random((13, 7)) > 0.6).astype(np.uint8)
        mask[0, 0] = 1  # run list must start with an empty zero run
        assert np.array_equal(rle_decode(_rle_encode(mask, compressed)), mask)
    with pytest.raises(BadInputError):
        rle_decode({"size": [2, 3], "counts": [1, 2]})
    for damaged in ("12", "PeQ3"):  # counts short of / beyond the 6 pixels
        with pytest.raises(BadInputError):
            rle_decode({"size": [2, 3], "counts": damaged})


def test_segments_summed_overlap_is_background() -> None:
    a = np.zeros((4, 4), np.uint8)
    a[:2, :3] = 1
    b = np.zeros((4, 4), np.uint8)
    b[1:3, 2:] = 1
    m = segmentation_to_mask([_rle_encode(a), _rle_encode(b, compressed=False)], 4, 4)
    expected = ((a.astype(int) + b) == 1).astype(np.uint8)
    assert np.array_equal(m, expected) and m[1, 2] == 0


# ------------------------------------------------------------------------------------ RRSIS-D


def _write_rrsisd(root: Path) -> dict[str, np.ndarray]:
    (root / "rrsisd").mkdir(parents=True)
    img_dir = root / "images" / "rrsisd" / "JPEGImages"
    img_dir.mkdir(parents=True)
    h, w = 24, 20  # not square: the reader resizes to S x S
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :10] = (200, 30, 30)
    img[:, 10:] = (30, 30, 200)
    Image.fromarray(img).save(img_dir / "00001.jpg", quality=95)
    Image.fromarray(img[:, ::-1].copy()).save(img_dir / "00002.jpg", quality=95)
    m1 = np.zeros((h, w), np.uint8)
    m1[4:12, 2:8] = 1
    m2 = np.zeros((h, w), np.uint8)
    m2[10:20, 12:18] = 1
    inst = {
        "images": [{"id": 1, "file_name": "00001.jpg", "height": h, "width": w},
                   {"id": 2, "file_name": "00002.jpg", "height": h, "width": w}],
        "annotations": [
            {"id": 101, "image_id": 1, "bbox": [2, 4, 6, 8], "area": 48, "categories_id": 3,
             "segmentation": [_rle_encode(m1, compressed=True)]},
            {"id": 102, "image_id": 2, "bbox": [12, 10, 6, 10], "area": 60, "categories_id": 9,
             "segmentation": [_rle_encode(m2, compressed=False)]},
        ],
        "categories": [{"id": 3, "name": "storage tank"}, {"id": 9, "name": "vehicle"}],
    }
    (root / "rrsisd" / "instances.json").write_text(json.dumps(inst))
    refs = [
        {"ref_id": 0, "ann_id": 101, "image_id": 1, "split": "train", "category_id": 3,
         "file_name": "00001.jpg", "sent_ids": [0],
         "sentences": [{"raw": "The storage tank on the left", "sent": "the storage tank on the left",
                        "tokens": ["the", "storage", "tank", "on", "the", "left"], "sent_id": 0}]},
        {"ref_id": 1, "ann_id": 102, "image_id": 2, "split": "test", "category_id": 9,
         "file_name": "00002.jpg", "sent_ids": [1],
         "sentences": [{"raw": "a vehicle at the bottom", "sent": "a vehicle at the bottom",
                        "tokens": ["a", "vehicle", "at", "the", "bottom"], "sent_id": 1}]},
    ]
    with open(root / "rrsisd" / "refs(unc).p", "wb") as fh:
        pickle.dump(refs, fh)
    return {"img": img, "m1": m1, "m2": m2}


def test_rrsisd_round_trip(tmp_path: Path) -> None:
    d = _write_rrsisd(tmp_path)
    ds = RRSISDDataset(tmp_path, "train", img_size=20)
    assert len(ds) == 1 and ds.max_tokens == 22
    s = ds[0]
    assert s["expression"] == "The storage tank on the left"
    assert s["category"] == "storage tank"
    assert s["input_ids"].shape == (22,)
    ref = decouple("The storage tank on the left", classes="rrsisd", max_tokens=22)
    assert torch.equal(s["object_mask"], ref.object_mask)
    # mask: nearest resize 24x20 -> 20x20 of the RLE-decoded rectangle
    expected = np.asarray(Image.fromarray(d["m1"]).resize((20, 20), Image.NEAREST))
    assert torch.equal(s["mask"], torch.from_numpy(expected.astype(np.int64)))
    assert s["mask"].sum() > 0
    rgb = _denorm(s["image"])
    assert np.abs(rgb[10, 2] - (200, 30, 30)).max() < 12  # JPEG is lossy
    assert np.abs(rgb[10, 17] - (30, 30, 200)).max() < 12

    t = open_dataset(tmp_path, "rrsisd", "test", img_size=24)
    assert len(t) == 1
    st = t[0]
    assert st["category"] == "vehicle"
    assert torch.equal(st["mask"], torch.from_numpy(np.asarray(
        Image.fromarray(d["m2"]).resize((24, 24), Image.NEAREST)).astype(np.int64)))


def test_unknown_format_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(BadInputError):
        open_dataset(tmp_path, "coco", "train")
    with pytest.raises(BadInputError):
        open_dataset(tmp_path / "nope", "refsegrs", "train")
    with pytest.raises(BadInputError, match="refs"):
        open_dataset(tmp_path, "rrsisd", "train")
