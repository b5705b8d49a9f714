"""One-minute smoke training of the tiny FIANet on generated chips, then evaluation and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rrsis_geo.cli.main import cli
from rrsis_geo.data.synth import write_chips
from rrsis_geo.model import load_fianet
from rrsis_geo.train.loop import lr_factor, param_groups, train
from rrsis_geo.train.metrics import METRIC_KEYS


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chips")
    write_chips(root, 40, size=128, seed=11, split="train")
    write_chips(root, 8, size=128, seed=12, split="val")
    write_chips(root, 8, size=128, seed=13, split="test")
    return root


@pytest.fixture(scope="module")
def trained(chips: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("run")
    # 64² and one thread keep the smoke run near a minute even on 2 shared cores (spinning
    # OpenMP threads collapse under contention); lr high and no warm-up so the loss visibly
    # falls within 30 iterations
    result = train(chips, "refsegrs", "tiny", out, epochs=6, batch_size=8, lr=1e-3,
                   img_size=64, seed=1, progress=False, warmup_iters=0, num_threads=1,
                   log=lambda msg: None)
    return out, result


def chips_of(run: Path) -> Path:
    """The dataset a run trained on (its summary's settings)."""
    return Path(json.loads((run / "summary.json").read_text())["settings"]["dataset_root"])


def test_trained_classes_follow_the_lineage(trained: tuple[Path, object], chips: Path,
                                            tmp_path: Path) -> None:
    """A run started from a saved model records its own classes and that model's; from a model
    that does not say what it learned (an official checkpoint), it records none (unknown)."""
    out, result = trained
    card = json.loads(result.weights.with_suffix(".json").read_text())
    own = card["meta"]["trained_classes"]
    for name, parent in (("known", [*own, "airplane"]), ("unknown", None)):
        stem = tmp_path / name / "parent"
        stem.parent.mkdir()
        shutil.copy(result.weights, stem.with_suffix(".safetensors"))
        meta = dict(card["meta"])
        if parent is None:
            meta.pop("trained_classes")
        else:
            meta["trained_classes"] = parent
        stem.with_suffix(".json").write_text(json.dumps({**card, "meta": meta}))
        child = train(chips, "refsegrs", "tiny", tmp_path / name / "run", epochs=1,
                      img_size=64, init_weights=str(stem.with_suffix(".safetensors")),
                      progress=False, num_threads=1, log=lambda msg: None)
        learned = load_fianet(child.weights).meta.get("trained_classes")
        assert learned == (sorted(parent) if parent else None)


def _events(path: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["event"] == kind]


def test_loss_falls_and_outputs_written(trained: tuple[Path, object]) -> None:
    out, result = trained
    iters = _events(out / "metrics.jsonl", "iter")
    assert len(iters) >= 12, "too few iterations to judge the loss"
    losses = [r["loss"] for r in iters]
    k = max(3, len(losses) // 5)
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k
    epochs = _events(out / "metrics.jsonl", "epoch")
    assert epochs and all("mIoU" in e["val"] for e in epochs)
    assert result.weights is not None and result.weights.exists()
    card = json.loads(result.weights.with_suffix(".json").read_text())
    meta = card["meta"]
    assert meta["input_size"] == 64 and meta["gsd"] == pytest.approx(0.25)
    assert meta["text_mode"] == "upstream" and meta["max_tokens"] == 20
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["training"]["select_metric"] == "mIoU"
    assert "val_metrics" in meta["training"]
    rows = [json.loads(x) for x in (chips_of(out) / "metadata.jsonl").read_text().splitlines()]
    assert meta["trained_classes"] == sorted({r["category"] for r in rows if r["split"] == "train"
                                              and r["type"] != "absent"})
    assert (out / "last.pt").exists() and (out / "summary.json").exists()
    # the shipped file must not carry the frozen MiniLM weights (the package provides them)
    model = load_fianet(result.weights)
    assert model.meta["input_size"] == 64
    # lr decayed to (almost) zero at the end of the poly schedule
    assert iters[-1]["lr"] < 0.2 * 1e-3


def test_evaluate_command_writes_json(trained: tuple[Path, object], chips: Path,
                                      tmp_path: Path) -> None:
    out, result = trained
    js = tmp_path / "eval.json"
    per = tmp_path / "per_sample.jsonl"
    r = CliRunner().invoke(cli, ["evaluate", str(chips), "--format", "refsegrs", "--split", "test",
                                 "--weights", str(result.weights), "--json", str(js),
                                 "--per-sample", str(per), "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    report = json.loads(js.read_text())
    assert set(report) == {*METRIC_KEYS, "subsets", "baselines"}
    assert report["count"] == 8
    for sub in report["subsets"].values():
        assert set(sub) == set(METRIC_KEYS)
    if report["subsets"].get("needs_disambiguation", {}).get("count"):
        base = report["baselines"]["category_union"]
        assert set(base) == set(METRIC_KEYS)
        assert base["count"] == report["subsets"]["needs_disambiguation"]["count"]
        assert base["mIoU"] > 0  # the union contains the referent
    assert len(per.read_text().splitlines()) == 8
    assert "mIoU" in r.output  # the table (stderr is mixed into output by CliRunner)


def test_evaluate_missing_weights_exit_4(chips: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["evaluate", str(chips), "--weights", str(tmp_path / "no.safetensors"),
                                 "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 4
    assert "not found" in r.output


def test_resume_continues_schedule(trained: tuple[Path, object], tmp_path: Path) -> None:
    out, result = trained
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    before = _events(copy / "metrics.jsonl", "iter")[-1]["iteration"]
    ckpt = torch.load(copy / "last.pt", map_location="cpu", weights_only=False)
    r2 = train(ckpt["settings"]["dataset_root"], resume=True, out=copy, epochs=ckpt["epoch"] + 1,
               progress=False, log=lambda msg: None)
    assert r2.summary["settings"]["num_threads"] == 1  # settings come from the checkpoint
    starts = _events(copy / "metrics.jsonl", "start")
    assert starts[-1]["resumed"] is True and starts[-1]["iteration"] == before
    after = _events(copy / "metrics.jsonl", "iter")
    assert after[-1]["iteration"] == (ckpt["epoch"] + 1) * starts[-1]["iters_per_epoch"]
    assert r2.epochs_done == ckpt["epoch"] + 1
    assert r2.best_epoch is not None


def test_time_budget_stops_cleanly(chips: Path, tmp_path: Path) -> None:
    # 100 epochs cannot fit in 20 s: the run must stop by itself and leave a resumable state
    result = train(chips, "refsegrs", "tiny", tmp_path / "b", epochs=100, img_size=64,
                   max_minutes=20 / 60, progress=False, num_threads=1, log=lambda msg: None)
    assert result.iterations < 100 * 5
    assert result.stopped_by_budget or result.summary["total_iters"] < 100 * 5
    assert result.summary["seconds_this_run"] < 20 + 60  # validation may run past the budget
    assert (tmp_path / "b" / "summary.json").exists()
    assert (tmp_path / "b" / "last.pt").exists()


def test_param_groups_and_poly() -> None:
    from rrsis_geo.model import FIANet, FIANetConfig

    model = FIANet(FIANetConfig.tiny())
    groups = {g["name"]: g for g in param_groups(model, 1e-3, 0.01)}
    assert set(groups) == {"backbone_no_decay", "backbone_decay", "classifier"}  # text frozen
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups["classifier"]["weight_decay"] == 0.01
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(any(k in names[id(p)] for k in ("norm", "relative_position_bias_table",
                                               "absolute_pos_embed"))
               for p in groups["backbone_no_decay"]["params"])
    # poly 0.9 per iteration
    assert lr_factor(0, 100) == 1.0
    assert lr_factor(50, 100) == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100) == 0.0
    assert lr_factor(4, 100, warmup=10) == pytest.approx(0.5)


def test_param_groups_trainable_bert_layers_0_to_9() -> None:
    from torch import nn

    class Fake(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.norm0 = nn.LayerNorm(2)
            self.backbone.fc = nn.Linear(2, 2)
            self.classifier = nn.Linear(2, 2)
            self.text_encoder = nn.Module()
            self.text_encoder.embeddings = nn.Linear(2, 2)
            self.text_encoder.encoder = nn.Module()
            self.text_encoder.encoder.layer = nn.ModuleList(nn.Linear(2, 2) for _ in range(12))

    groups = {g["name"]: g for g in param_groups(Fake(), 1e-3, 0.01)}
    assert len(groups["text_encoder"]["params"]) == 20  # layers 0-9, weight + bias each
    assert len(groups["backbone_no_decay"]["params"]) == 2  # backbone.norm0.{weight,bias}
    assert len(groups["backbone_decay"]["params"]) == 2


def test_validation_inside_epochs(chips: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    result = train(chips, "refsegrs", "tiny", out, epochs=1, img_size=64, val_every=2,
                   progress=False, num_threads=1, log=lambda msg: None)
    vals = _events(out / "metrics.jsonl", "val")
    assert [v["iteration"] for v in vals] == [2, 4]  # 5 iterations; the epoch end validates too
    assert len(_events(out / "metrics.jsonl", "epoch")) == 1
    assert result.best_epoch is not None


def test_coord_channels_recorded_and_old_runs_resume(trained: tuple[Path, object], chips: Path,
                                                     tmp_path: Path) -> None:
    out, result = trained
    assert result.summary["settings"]["coord_channels"] == 2  # the tiny default, made explicit
    assert load_fianet(result.weights).config.coord_channels == 2
    # a run started before the option existed: its settings have no key, its weights 3 planes
    old = tmp_path / "old"
    train(chips, "refsegrs", "tiny", old, epochs=1, img_size=64, coord_channels=0,
          progress=False, num_threads=1, log=lambda msg: None)
    ckpt = torch.load(old / "last.pt", map_location="cpu", weights_only=False)
    del ckpt["settings"]["coord_channels"]
    torch.save(ckpt, old / "last.pt")
    r2 = train(chips, resume=True, out=old, epochs=2, progress=False, log=lambda msg: None)
    assert r2.epochs_done == 2
    assert load_fianet(r2.weights).config.coord_channels == 0


def test_int8_precision_in_evaluate_and_segmenter(trained: tuple[Path, object], chips: Path,
                                                  tmp_path: Path) -> None:
    """--precision int8 (dynamic quantization of the Linear layers) evaluates the same chips
    with a mIoU near fp32's, and a Segmenter with it predicts nearly the same pixels."""
    import numpy as np

    from rrsis_geo.inference.segmenter import Segmenter

    _, result = trained
    scores = {}
    for precision in ("fp32", "int8"):
        js = tmp_path / f"{precision}.json"
        r = CliRunner().invoke(cli, ["evaluate", str(chips), "--split", "test", "--weights",
                                     str(result.weights), "--json", str(js), "--quiet",
                                     "--threads", "1", "--precision", precision])
        assert r.exit_code == 0, r.output
        scores[precision] = json.loads(js.read_text())
    assert scores["int8"]["count"] == scores["fp32"]["count"] == 8
    assert abs(scores["int8"]["mIoU"] - scores["fp32"]["mIoU"]) < 0.05
    fp32 = Segmenter(result.weights, device="cpu", precision="fp32")
    int8 = Segmenter(result.weights, device="cpu", precision="int8")
    assert not any(type(m) is torch.nn.Linear for m in int8.model.backbone.modules())
    img = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    a = fp32.predict(img, fp32.encode("the red building")) >= 0.5
    b = int8.predict(img, int8.encode("the red building")) >= 0.5
    assert (a == b).mean() > 0.95


def test_flips_and_colour_jitter_train_and_are_recorded(chips: Path, tmp_path: Path) -> None:
    out = tmp_path / "aug"
    result = train(chips, "refsegrs", "tiny", out, epochs=1, img_size=64, flips=True,
                   colour_jitter=0.3, progress=False, num_threads=1, log=lambda msg: None)
    assert result.summary["settings"]["flips"] is True
    assert result.summary["settings"]["colour_jitter"] == 0.3
    training = load_fianet(result.weights).meta["training"]
    assert training["flips"] is True and training["colour_jitter"] == 0.3


def test_cli_says_what_the_model_was_trained_to_find(chips: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["train", str(chips), "--out", str(out), "--epochs", "1",
                                 "--img-size", "64", "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    learned = json.loads((out / "fianet_tiny.json").read_text())["meta"]["trained_classes"]
    assert learned and f"trained to find: {', '.join(learned)} " in r.output


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_bad_colour_jitter_is_refused(chips: Path, tmp_path: Path, value: str) -> None:
    out = tmp_path / "bad"
    r = CliRunner().invoke(cli, ["train", str(chips), "--out", str(out), "--colour-jitter",
                                 value])
    assert r.exit_code == 2, r.output
    assert "--colour-jitter must be a number from 0 to 1" in r.output
    assert not out.exists()


def test_unusable_starting_weights_leave_no_output_folder(chips: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    r = CliRunner().invoke(cli, ["train", str(chips), "--out", str(out), "--weights", str(bad),
                                 "--quiet"])
    assert r.exit_code == 4, r.output
    assert not out.exists()
