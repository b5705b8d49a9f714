"""Distillation from teacher models in training (``rrsis-geo train --distill``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rrsis_geo.cli.main import cli
from rrsis_geo.data.synth import write_chips
from rrsis_geo.errors import WeightsError
from rrsis_geo.model import FIANet, FIANetConfig, load_fianet, save_fianet
from rrsis_geo.train.distill import (Teacher, distill_loss, parse_patterns, route,
                                     teacher_probabilities)
from rrsis_geo.train.loop import train


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chips")
    write_chips(root, 24, size=128, seed=31, split="train")
    write_chips(root, 8, size=128, seed=32, split="val")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny models of different random weights, saved: a starting point and a teacher
    with an opinion (its last layer leans to "referent" where the sentence is read as red-ish
    pixels; a random model answers about one half everywhere)."""
    root = tmp_path_factory.mktemp("models")
    paths = []
    for name, seed in (("start", 1), ("teacher", 2)):
        torch.manual_seed(seed)
        model = FIANet(FIANetConfig.tiny())
        if name == "teacher":
            with torch.no_grad():
                model.classifier.conv1_1.weight.mul_(20.0)
                model.classifier.conv1_1.bias.copy_(torch.tensor([-1.0, 1.0]))
        w, _ = save_fianet(model, root / name)
        paths.append(w)
    return paths[0], paths[1]


def test_patterns_and_first_matching_teacher() -> None:
    assert parse_patterns("p0_*, p2_*") == ("p0_*", "p2_*")
    assert parse_patterns("*") == () and parse_patterns("") == ()
    a = Teacher("a", torch.nn.Identity(), ("p0_*",))
    b = Teacher("b", torch.nn.Identity(), ())
    assert route([a, b], ["p0_x", "p1_x", "p10_x"]) == [0, 1, 1]
    assert route([a], ["p0_x", "p1_x"]) == [0, None]


def test_distill_loss_is_zero_at_the_teacher_and_pulls_towards_it() -> None:
    torch.manual_seed(0)
    t_logits = torch.randn(2, 2, 8, 8)
    probs = t_logits.softmax(dim=1)
    assert distill_loss(t_logits, probs).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 2, 8, 8, requires_grad=True)
    before = distill_loss(student, probs)
    assert before.item() > 0.01
    before.backward()
    with torch.no_grad():
        after = distill_loss(student - 5.0 * student.grad, probs)
    assert after.item() < before.item()
    with pytest.raises(ValueError, match="differ in shape"):
        distill_loss(student, probs[:1])


def test_teacher_probabilities_go_to_their_rows() -> None:
    a = Teacher("a", torch.nn.Identity(), ("x*",))
    b = Teacher("b", torch.nn.Identity(), ())
    logits = torch.randn(3, 2, 4, 4)
    calls = []

    def run(model: torch.nn.Module, rows: list[int]) -> torch.Tensor:
        calls.append(rows)
        return logits[rows] * (1.0 if model is a.model else 2.0)

    rows, probs = teacher_probabilities([a, b], route([a, b], ["y1", "x1", "y2"]), run)
    assert calls == [[1], [0, 2]] and rows.tolist() == [1, 0, 2]
    assert torch.allclose(probs[0], logits[1].softmax(dim=0))
    assert torch.allclose(probs[1], (2 * logits[0]).softmax(dim=0))
    assert teacher_probabilities([a], route([a], ["y"]), run) is None


def _terms(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["distill"] for r in rows if r["event"] == "iter"]


def test_training_with_a_teacher_moves_the_student_towards_it(
        chips: Path, models: tuple[Path, Path], tmp_path: Path) -> None:
    """Same start, data and seed: the run taught by the teacher gets closer to it (the KL term
    it logs, in training mode) than a run where the teacher's weight is too small to matter."""
    start, teacher = models
    kw = dict(epochs=4, img_size=64, lr=1e-3, warmup_iters=0, seed=3, progress=False,
              num_threads=1, log=lambda msg: None, init_weights=str(start),
              distill=[str(teacher)])
    train(chips, "refsegrs", "tiny", tmp_path / "plain", distill_weight=1e-6, **kw)
    taught = train(chips, "refsegrs", "tiny", tmp_path / "taught", distill_weight=5.0, **kw)
    plain_terms, taught_terms = _terms(tmp_path / "plain"), _terms(tmp_path / "taught")
    assert len(taught_terms) == 12
    assert taught_terms[0] == pytest.approx(plain_terms[0])  # the same first batch
    late = slice(-3, None)
    assert _mean(taught_terms[late]) < 0.75 * _mean(plain_terms[late]), (plain_terms,
                                                                          taught_terms)
    assert taught.summary["settings"]["distill"] == [str(teacher)]
    assert load_fianet(taught.weights).meta["training"]["distill"] == {
        "teachers": [teacher.name], "ids": [], "weight": 5.0}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_a_teacher_for_no_sample_changes_nothing(chips: Path, models: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    start, teacher = models
    kw = dict(epochs=1, img_size=64, lr=1e-3, warmup_iters=0, seed=3, progress=False,
              num_threads=1, log=lambda msg: None, init_weights=str(start))
    plain = train(chips, "refsegrs", "tiny", tmp_path / "plain", **kw)
    idle = train(chips, "refsegrs", "tiny", tmp_path / "idle", distill=[str(teacher)],
                 distill_ids=["no_such_id_*"], **kw)
    a, b = load_fianet(plain.weights).state_dict(), load_fianet(idle.weights).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _one_line(r, code: int, text: str) -> None:
    """One error line, last; before it at most the progress notes of the command."""
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rrsis-geo: error: ")]
    assert errors == lines[-1:] and text in errors[0], r.output
    assert all(ln.startswith("rrsis-geo train: ") for ln in lines[:-1]), r.output


def test_cli_refuses_bad_teachers_without_writing(chips: Path, models: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    start, teacher = models
    out = tmp_path / "never"
    base = ["train", str(chips), "--out", str(out), "--img-size", "64", "--epochs", "1",
            "--threads", "1", "--quiet"]
    r = CliRunner().invoke(cli, [*base, "--distill-ids", "p0_*"])
    _one_line(r, 2, "--distill-ids needs --distill")
    r = CliRunner().invoke(cli, [*base, "--distill", str(teacher), "--distill", str(start),
                                 "--distill-ids", "p0_*"])
    _one_line(r, 2, "once per --distill")
    r = CliRunner().invoke(cli, [*base, "--distill", str(teacher), "--distill-weight", "0"])
    _one_line(r, 2, "--distill-weight must be > 0")
    r = CliRunner().invoke(cli, [*base, "--distill", str(tmp_path / "missing.safetensors")])
    _one_line(r, 4, "--distill file not found")
    # a teacher that decouples sentences with another class list
    card = json.loads(teacher.with_suffix(".json").read_text())
    card["meta"]["classes"] = ["lighthouse"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "t.safetensors").write_bytes(teacher.read_bytes())
    (other / "t.json").write_text(json.dumps(card))
    r = CliRunner().invoke(cli, [*base, "--weights", str(start), "--distill",
                                 str(other / "t.safetensors")])
    _one_line(r, 4, "reads text differently")
    assert not out.exists()


def test_load_teachers_checks_the_token_budget(models: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    from rrsis_geo.train.distill import load_teachers

    start, teacher = models
    card = json.loads(teacher.with_suffix(".json").read_text())
    card["meta"]["max_tokens"] = 20
    (tmp_path / "t.safetensors").write_bytes(teacher.read_bytes())
    (tmp_path / "t.json").write_text(json.dumps(card))
    student = load_fianet(start)
    with pytest.raises(WeightsError, match=r"\(max_tokens differ\)"):
        load_teachers([str(tmp_path / "t.safetensors")], [], student, {"max_tokens": 12},
                      torch.device("cpu"), lambda m: None)
    [t] = load_teachers([str(tmp_path / "t.safetensors")], ["a*"], student,
                        {"max_tokens": 20}, torch.device("cpu"), lambda m: None)
    assert t.patterns == ("a*",) and not t.model.training
    assert not any(p.requires_grad for p in t.model.parameters())


def test_a_resumed_run_keeps_its_teachers(chips: Path, models: tuple[Path, Path],
                                          tmp_path: Path) -> None:
    start, teacher = models
    kw = dict(img_size=64, lr=1e-3, warmup_iters=0, seed=3, progress=False, num_threads=1,
              log=lambda msg: None)
    out = tmp_path / "run"
    train(chips, "refsegrs", "tiny", out, epochs=1, init_weights=str(start),
          distill=[str(teacher)], distill_ids=["*"], **kw)
    first = len(_terms(out))
    resumed = train(chips, "refsegrs", "tiny", out, epochs=2, resume=True, **kw)
    terms = _terms(out)
    assert len(terms) == 2 * first and all(t > 0 for t in terms)
    assert resumed.summary["settings"]["distill"] == [str(teacher)]
