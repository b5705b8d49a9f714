"""The class check's object classifier: network, file, training data, and its say in selection."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import torch
from torch import nn

from rrsis_geo.errors import WeightsError
from rrsis_geo.inference.segmenter import Segmenter
from rrsis_geo.model.objclass import (
    OTHER,
    ObjectClassifier,
    load_object_classifier,
    save_object_classifier,
    sibling_path,
)
from tests.rasters import scene
from tests.standin import run_pipeline


def test_classifier_adds_other_and_answers_one_logit_per_class():
    model = ObjectClassifier(["car", "truck", OTHER, "pond"], width=8, window=64)
    assert model.classes == ["car", "truck", "pond", OTHER]
    out = model(torch.zeros(3, 3, 64, 64), torch.ones(3, 1, 64, 64))
    assert out.shape == (3, 4)
    with pytest.raises(ValueError):
        ObjectClassifier([OTHER])


def test_classifier_reads_the_mask():
    """The same window with another candidate mask is another question."""
    torch.manual_seed(0)
    model = ObjectClassifier(["car", "truck"], width=8, window=64).eval()
    img = torch.randn(1, 3, 64, 64)
    left, right = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    left[..., 20:30, 5:15], right[..., 20:30, 45:55] = 1, 1
    assert not torch.allclose(model(img, left), model(img, right))


def test_judged_classes_default_to_all_and_survive_the_file(tmp_path):
    assert ObjectClassifier(["tree", "car"], width=8).judged == ["tree", "car"]
    model = ObjectClassifier(["tree", "car", "bus"], width=8, judged=["car", "bus", "ship"])
    assert model.judged == ["car", "bus"]
    save_object_classifier(model, tmp_path / "c.safetensors")
    assert load_object_classifier(tmp_path / "c.safetensors")[0].judged == ["car", "bus"]


def test_file_round_trip_and_sibling_name(tmp_path):
    torch.manual_seed(1)
    model = ObjectClassifier(["car", "bus"], width=8, window=32).eval()
    path = sibling_path(tmp_path / "fianet_tiny.safetensors")
    assert path.name == "fianet_tiny.objclass.safetensors"
    assert sibling_path("w/official.pth").name == "official.objclass.safetensors"
    save_object_classifier(model, path, {"steps": 3})
    again, record = load_object_classifier(path)
    assert again.classes == model.classes and again.window == 32 and record == {"steps": 3}
    img, mask = torch.randn(2, 3, 32, 32), torch.ones(2, 1, 32, 32)
    assert torch.equal(model(img, mask), again(img, mask))


def test_a_file_that_is_not_a_classifier_is_refused(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "x.objclass.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(WeightsError, match="not an object classifier"):
        load_object_classifier(other)
    broken = tmp_path / "y.objclass.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot load"):
        load_object_classifier(broken)


def test_samples_are_windows_on_objects_of_their_class():
    from rrsis_geo.data.synth.chips import make_chip
    from rrsis_geo.data.synth.vocabulary import CATEGORIES
    from rrsis_geo.train.objclass import MIN_VISIBLE_PX, make_samples

    s = make_samples(CATEGORIES, 12, 2_000_000, window=96)
    assert s.images.shape[1:] == (96, 96, 3) and s.masks.shape[1:] == (96, 96)
    assert s.classes[-1] == OTHER and len(s) == len(s.labels) == len(s.masks)
    assert (s.masks.reshape(len(s), -1).sum(1) >= MIN_VISIBLE_PX // 2).all()
    # every chip gives its objects' classes (and one "other" blob where nothing lies)
    chip, label, objects = make_chip(2_000_000, 192)
    shown = [o.category for o in objects if (label == o.id).sum() >= MIN_VISIBLE_PX]
    assert [s.classes[i] for i in s.labels[:len(shown)]] == shown
    assert np.bincount(s.labels, minlength=len(s.classes))[-1] >= 10  # "other" blobs
    with pytest.raises(ValueError):
        make_samples(CATEGORIES, 1, 0, window=100)


def test_training_runs_within_budget_and_evaluates():
    from rrsis_geo.data.synth.vocabulary import CATEGORIES
    from rrsis_geo.train.objclass import evaluate, make_samples, train_object_classifier

    s = make_samples(CATEGORIES, 8, 2_000_000, window=64)
    model, record = train_object_classifier(s, max_minutes=0.05, width=8, batch=16)
    assert record["steps"] >= 1 and record["samples"] == len(s)
    ev = evaluate(model, s)
    assert np.sum(ev["confusion"]) == len(s) and 0 <= ev["accuracy"] <= 1


# -- its say in the class check -------------------------------------------------------------


class FixedClassifier(nn.Module):
    """Answers the same log-probabilities for every window."""

    def __init__(self, classes, probs, window=64):
        super().__init__()
        self.classes, self.window = [*classes, OTHER], window
        self.logits = torch.log(torch.tensor(probs, dtype=torch.float32))
        self.seen = []

    def forward(self, image, mask):
        self.seen.append((tuple(image.shape), float(mask.sum())))
        return self.logits.expand(image.shape[0], -1)


@pytest.fixture
def class_seg():
    from tests.standin import ColourClassSegmenter

    return Segmenter(model=ColourClassSegmenter(input_size=64), device="cpu")


def _red_building(tmp_path):
    return scene(100, 100, [(40, 40, 60, 60)])


@pytest.mark.parametrize("probs,found", [
    ((0.9, 0.05, 0.03, 0.02), 1),   # a building: kept
    ((0.45, 0.45, 0.05, 0.05), 1),  # a building or a car, equally: kept (the margin is 0)
    # a car, says the classifier (-3.8 logits), but the stand-in's own prompts put the red
    # box 23 logits ahead of "the car": the sum decides, and it stays
    ((0.02, 0.9, 0.05, 0.03), 1),
    ((1e-12, 1.0, 1e-12, 0.0), 0),   # sure it is a car (-28): "no target"
    ((1e-12, 0.0, 1e-12, 1.0), 0),   # sure it is none of its objects: "no target"
])
def test_object_classifier_adds_its_margin_to_the_models(tmp_path, class_seg, probs, found):
    clf = FixedClassifier(["building", "car", "tree"], probs)
    class_seg._objclass = clf
    res, out = run_pipeline(tmp_path, _red_building(tmp_path), class_seg, expr="the building")
    assert res["objects"] == found and len(pyogrio.read_dataframe(out)) == found
    assert clf.seen and clf.seen[0][0] == (1, 3, 64, 64)  # one window, with the candidate's mask
    assert clf.seen[0][1] > 100


def test_no_object_classifier_option_leaves_it_out(tmp_path, class_seg):
    clf = FixedClassifier(["building", "car", "tree"], (1e-12, 1.0, 1e-12, 0.0))
    class_seg._objclass = clf
    res, _ = run_pipeline(tmp_path, _red_building(tmp_path), class_seg, expr="the building",
                          object_classifier=False)
    assert res["objects"] == 1 and clf.seen == []


def test_object_classifier_is_not_asked_for_a_class_it_does_not_judge(tmp_path, class_seg):
    clf = FixedClassifier(["car", "tree"], (0.05, 0.05, 0.9))
    class_seg._objclass = clf
    res, _ = run_pipeline(tmp_path, _red_building(tmp_path), class_seg, expr="the building")
    assert res["objects"] == 1 and clf.seen == []
    # it knows buildings, but leaves them to the referring model
    clf = FixedClassifier(["building", "car", "tree"], (1e-12, 1.0, 1e-12, 0.0))
    clf.judged = ["car", "tree"]
    class_seg._objclass = clf
    res, _ = run_pipeline(tmp_path, _red_building(tmp_path), class_seg, expr="the building",
                          out="left.gpkg")
    assert res["objects"] == 1 and clf.seen == []


def test_a_real_classifier_larger_than_the_raster(tmp_path, class_seg):
    """Its window (128 px) is larger than the 100-px raster: the window is padded, the run
    goes through, and a head biased to "other" turns the building into "no target"."""
    model = ObjectClassifier(["building", "car", "tree"], width=8, window=128).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 40.0]))
        model.head.weight.zero_()
    class_seg._objclass = model
    res, _ = run_pipeline(tmp_path, _red_building(tmp_path), class_seg, expr="the building")
    assert res["objects"] == 0


def test_segmenter_finds_the_classifier_beside_its_weights(tmp_path, monkeypatch):
    import rrsis_geo.model as model_pkg
    from tests.standin import ColourClassSegmenter

    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"x")
    monkeypatch.setattr(model_pkg, "load_fianet", lambda p, **k: ColourClassSegmenter(64))
    seg = Segmenter(str(weights), device="cpu")
    assert seg.object_classifier() is None
    save_object_classifier(ObjectClassifier(["building"], width=8, window=32),
                           sibling_path(weights))
    seg = Segmenter(str(weights), device="cpu")
    clf = seg.object_classifier()
    assert clf is not None and clf.classes == ["building", OTHER]
    logp = seg.classify_objects(np.zeros((2, 3, 32, 32), np.float32), np.ones((2, 32, 32), bool))
    assert logp.shape == (2, 2) and np.allclose(np.exp(logp).sum(1), 1, atol=1e-5)


# -- rrsis-geo train-objclass -----------------------------------------------------------------


def _cli(args):
    from click.testing import CliRunner

    from rrsis_geo.cli.main import cli

    return CliRunner().invoke(cli, args)


def test_cli_refuses_bad_input_before_any_work(tmp_path):
    res = _cli(["train-objclass", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 4 and "weights file not found" in res.output
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"x")
    res = _cli(["train-objclass", str(weights), "--not-judged", "tree,ship"])
    assert res.exit_code == 2 and "ship is not a class" in res.output
    sibling_path(weights).write_bytes(b"old")
    res = _cli(["train-objclass", str(weights)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert sibling_path(weights).read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.objclass.safetensors",
                                                          "m.safetensors"]


def test_cli_trains_and_writes_the_classifier_beside_the_weights(tmp_path):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"x")
    res = _cli(["train-objclass", str(weights), "--chips", "100", "--max-minutes", "0.1",
                "--not-judged", "tree,building", "--num-threads", "1"])
    assert res.exit_code == 0, res.output
    assert "validation accuracy" in res.output
    model, record = load_object_classifier(sibling_path(weights))
    assert "tree" in model.classes and "tree" not in model.judged
    assert "car" in model.judged and record["chips"] == 100 and record["steps"] >= 1
    assert sibling_path(weights).stat().st_mode & 0o044  # readable by others, not 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.objclass.safetensors",
                                                          "m.safetensors"]
