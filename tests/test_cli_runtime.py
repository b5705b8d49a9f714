"""``--threads``, ``--device cuda:N`` and the global ``-v`` / ``-q`` flags."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rrsis_geo import log, progress
from rrsis_geo.cli.main import cli
from rrsis_geo.errors import UsageError
from rrsis_geo.inference.device import resolve_device, set_threads

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "sample_data" / "demo_scene.tif"
ROI = "579990,5046262,580118,5046390"  # 512 x 512 pixels of the demo scene: 16 tiles
needs_model = pytest.mark.skipif(
    not (REPO / "sample_data" / "demo_model" / "fianet_tiny.safetensors").is_file(),
    reason="the demo model is not in sample_data/demo_model/")


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(UsageError, match="cuda:N"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        with pytest.raises(UsageError, match=f"has {n} CUDA device"):
            resolve_device(f"cuda:{n}")
    else:
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1  # None leaves it as it is
        with pytest.raises(UsageError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("args", [["--device", "cuda:x"], ["--device", "tpu"],
                                  ["--threads", "0"], ["--threads", "two"]])
@pytest.mark.parametrize("command", [["segment", "in.tif", "-o", "o.gpkg"],
                                     ["segment-many", "in.tif", "--out-dir", "o"]])
def test_bad_device_or_threads_is_a_usage_error(command, args, tmp_path):
    r = CliRunner().invoke(cli, [*command, "-e", "the building", *args])
    assert r.exit_code == 2, r.output
    assert ("--device" in r.output) or ("--threads" in r.output)


def test_device_help_names_cuda_n():
    for cmd in ("segment", "segment-many", "train", "evaluate"):
        r = CliRunner().invoke(cli, [cmd, "--help"])
        assert "cuda:N" in r.output, cmd
    r = CliRunner().invoke(cli, ["segment", "--help"])
    assert "--threads" in r.output


def test_verbosity_levels_and_quiet_reporter(capsys):
    assert [log.level_for(v) for v in (-2, -1, 0, 1, 2, 3)] == [
        logging.ERROR, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG, logging.DEBUG]
    progress.QUIET = True
    try:
        rep = progress.Reporter("bar")
        assert rep.mode == "none"
        rep.message("an info line")
        rep.warn("a warning")
        rep.result({"objects": 1, "outputs": {"vector": "x.gpkg"}})
        assert progress.Reporter("jsonl").mode == "jsonl"  # machine output is never muted
    finally:
        progress.QUIET = False
    err = capsys.readouterr().err
    assert "a warning" in err and "an info line" not in err and "object(s)" not in err


def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rrsis_geo.cli.main", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@needs_model
def test_verbose_and_quiet_segment_with_threads(tmp_path):
    common = [str(SCENE), "-e", "the building", "--roi", ROI, "--no-class-check",
              "--threads", "1", "--device", "cpu"]
    r = _run(["-v", "segment", *common, "-o", "v.gpkg"], tmp_path)
    assert r.returncode == 0, r.stderr
    info = [ln for ln in r.stderr.splitlines() if ln.startswith("rrsis-geo: info: model ")]
    assert len(info) == 1 and "on cpu" in info[0] and "1 CPU thread(s)" in info[0], r.stderr
    assert "object(s) ->" in r.stderr

    r = _run(["-q", "segment", *common, "-o", "q.gpkg"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "" and r.stdout.strip() == ""
    assert (tmp_path / "q.gpkg").is_file()
