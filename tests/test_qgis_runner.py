"""The QGIS plugin's runner without QGIS: it is pure Python by design (no qgis import)."""

from __future__ import annotations

import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "qgis_plugin"))
from rrsis_geo_qgis import runner  # noqa: E402


class Feedback:
    """Records what QgsProcessingFeedback would receive; cancels on request."""

    def __init__(self, cancel_after_progress: float | None = None) -> None:
        self.progress: list[float] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.commands: list[str] = []
        self.console: list[str] = []
        self.cancel_after = cancel_after_progress
        self.canceled_at: float | None = None

    def setProgress(self, p: float) -> None:  # noqa: N802
        self.progress.append(p)
        if self.cancel_after is not None and p >= self.cancel_after and not self.canceled_at:
            self.canceled_at = time.monotonic()

    def pushInfo(self, t: str) -> None:  # noqa: N802
        self.infos.append(t)

    def pushWarning(self, t: str) -> None:  # noqa: N802
        self.warnings.append(t)

    def pushCommandInfo(self, t: str) -> None:  # noqa: N802
        self.commands.append(t)

    def pushConsoleInfo(self, t: str) -> None:  # noqa: N802
        self.console.append(t)

    def isCanceled(self) -> bool:  # noqa: N802
        return self.canceled_at is not None


def child(tmp_path: Path, body: str) -> list[str]:
    """argv of a small Python child process running ``body``."""
    script = tmp_path / "child.py"
    script.write_text("import json, os, sys, time\n"
                      "def emit(o):\n    print(json.dumps(o), flush=True)\n"
                      + textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_plugin_package_never_imports_heavy_stacks():
    src = Path(runner.__file__).parent
    for f in src.glob("*.py"):
        text = f.read_text()
        for bad in ("import torch", "import numpy", "import rrsis_geo\n", "from rrsis_geo",
                    "from PyQt5", "from PyQt6", "import PyQt"):
            assert bad not in text, f"{f.name} contains {bad!r}"


def test_progress_mapper_weights_stages_and_never_goes_back():
    m = runner.ProgressMapper()
    assert m.update("open", 0, 0) == 0.0
    p_norm = m.update("normalize", 0, 0)
    assert p_norm == pytest.approx(10.0)  # open done: 10 of 100
    mid = m.update("tiles", 50, 100)
    assert mid == pytest.approx(15 + 32.5)
    assert m.update("tiles", 10, 100) == mid  # out-of-order event: bar does not move back
    assert m.update("tiles", 100, 100) == pytest.approx(80)
    assert m.update("select", 0, 0) == pytest.approx(80)
    assert m.update("check", 20, 40) == pytest.approx(90)  # the class check has its own share
    assert m.update("write", 1, 1) == pytest.approx(100)


def test_progress_mapper_unknown_stage_stays_below_100():
    m = runner.ProgressMapper()
    values = [m.update(s, 1, 1) for s in ["open", "mystery", "normalize", "tiles", "select",
                                          "check", "write"]]
    assert values == sorted(values) and max(values) <= 100.0
    assert values[-1] == pytest.approx(100.0)
    assert m.update("bogus", "x", None) <= 100.0  # malformed numbers do not raise


def test_build_command_leaves_unset_options_to_the_cli():
    argv = runner.build_segment_command(
        "/opt/env/bin/rrsis-geo", "/d/a b.tif", "the car's roof", "/d/o.gpkg",
        {"threshold": 0.35, "tile-size": None, "weights": "", "mode": "all", "min_area": 2.0})
    assert argv == ["/opt/env/bin/rrsis-geo", "segment", "/d/a b.tif", "-e", "the car's roof",
                    "-o", "/d/o.gpkg", "--threshold", "0.35", "--mode", "all", "--min-area",
                    "2.0", "--overwrite", "--progress", "jsonl"]
    assert shlex.split(runner.command_line(argv)) == argv


def test_every_option_the_plugin_sends_is_accepted_by_the_real_cli(tmp_path):
    """Contract drift guard: parse the plugin's full argument list with the real click command."""
    segment = pytest.importorskip("rrsis_geo.cli.segment")
    argv = runner.build_segment_command(
        "rrsis-geo", str(tmp_path / "in.tif"), "the red car", str(tmp_path / "o.gpkg"),
        {"weights": str(tmp_path / "w.safetensors"), "device": "cpu", "mode": "all",
         "threshold": 0.4, "min-area": 2.0, "simplify": 1.0, "tile-size": 256, "overlap": 64,
         "gsd": "auto", "batch-size": 2, "bands": "3,2,1", "min-score": 0.3, "max-objects": 5,
         "prob-raster": str(tmp_path / "p.tif"), "precision": "fp32", "no-class-check": True,
         "roi": "1.0,2.0,3.0,4.0"})
    ctx = segment.command.make_context("segment", argv[2:])
    assert ctx.params["expressions"] == ("the red car",) and ctx.params["mode"] == "all"
    assert ctx.params["overwrite"] is True  # QGIS's file dialog asked before replacing
    assert ctx.params["progress"] == "jsonl" and ctx.params["max_objects"] == 5
    assert ctx.params["class_check"] is False and ctx.params["precision"] == "fp32"
    assert ctx.params["bands"] == "3,2,1"


def test_flags_are_bare_and_false_is_left_out():
    argv = runner.build_segment_command("x", "in.tif", "the car", "o.shp",
                                        {"no-class-check": True, "resume": False})
    assert argv == ["x", "segment", "in.tif", "-e", "the car", "-o", "o.shp",
                    "--no-class-check", "--overwrite", "--progress", "jsonl"]


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_executable_order(tmp_path, monkeypatch):
    a, b, c = (_exe(tmp_path / d / "rrsis-geo") for d in ("setting", "env", "path"))
    env = {"RRSIS_GEO_EXE": str(b), "PATH": str(c.parent)}
    assert runner.find_executable(str(a), env) == (str(a), "Processing provider setting")
    assert runner.find_executable("", env)[0] == str(b)
    assert runner.find_executable(None, {"PATH": str(c.parent)}) == (str(c), "PATH")
    # an explicit but wrong path is reported, not replaced by another CLI
    path, why = runner.find_executable(str(tmp_path / "nope"), env)
    assert path is None and "does not exist" in why
    (tmp_path / "noexec").write_text("x")
    path, why = runner.find_executable(str(tmp_path / "noexec"), env)
    assert path is None and "not executable" in why
    monkeypatch.setattr(runner, "_repo_venv_candidates", lambda: [])
    path, why = runner.find_executable(None, {"PATH": str(tmp_path / "empty")})
    assert path is None
    assert "RRSIS_GEO_EXE" in runner.missing_executable_message(why)


def test_find_executable_falls_back_to_repo_venv(tmp_path, monkeypatch):
    venv_exe = _exe(tmp_path / ".venv" / "bin" / "rrsis-geo")
    monkeypatch.setattr(runner, "_repo_venv_candidates", lambda: [venv_exe])
    assert runner.find_executable(None, {"PATH": str(tmp_path / "empty")}) == (
        str(venv_exe), "the repository's .venv")


def test_child_environment_drops_qgis_python_and_proj():
    env = runner.child_environment({"PYTHONHOME": "/qgis/apps/Python39", "PYTHONPATH": "x",
                                    "PROJ_LIB": "/qgis/share/proj", "GDAL_DATA": "g",
                                    "HOME": "/h"})
    assert env == {"HOME": "/h", "PYTHONUNBUFFERED": "1"}


def test_run_cli_relays_events(tmp_path):
    argv = child(tmp_path, """
        emit({"event": "progress", "stage": "open", "done": 0, "total": 0})
        emit({"event": "message", "level": "info", "text": "loading"})
        emit({"event": "message", "level": "warning", "text": "careful"})
        print("not json", flush=True)
        sys.stderr.write("a stderr line\\n")
        emit({"event": "progress", "stage": "tiles", "done": 2, "total": 4})
        emit({"event": "result", "outputs": {"vector": "x"}, "objects": 3})
    """)
    fb = Feedback()
    res = runner.run_cli(argv, fb)
    assert res["objects"] == 3
    assert fb.infos == ["loading"] and fb.warnings == ["careful"]
    assert "not json" in fb.console and "a stderr line" in fb.console
    assert fb.progress[0] == 0.0 and fb.progress[-1] == 100.0 and 0 < fb.progress[1] < 100
    assert fb.commands == [runner.command_line(argv)]


@pytest.mark.parametrize("code,needle", [(2, "rejected the parameters"),
                                         (3, "input raster or the expression"),
                                         (4, "model weights"), (5, "out of memory"),
                                         (130, "interrupted"), (1, "exit code 1")])
def test_run_cli_exit_codes(tmp_path, code, needle):
    out = tmp_path / "o.gpkg"
    argv = child(tmp_path, f"""
        open({str(out)!r}, "w").write("half")
        sys.stderr.write("rrsis-geo: error: the detail\\n")
        sys.exit({code})
    """)
    with pytest.raises(runner.CliError) as ei:
        runner.run_cli(argv, Feedback(), outputs=[str(out)])
    msg = str(ei.value)
    assert needle in msg and "the detail" in msg and "rrsis-geo: error:" not in msg
    assert ei.value.returncode == code
    assert not out.exists(), "a failed run must not leave its output"


def test_run_cli_killed_by_signal_9_says_oom(tmp_path):
    argv = child(tmp_path, "import signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(runner.CliError, match="out-of-memory killer"):
        runner.run_cli(argv, Feedback())


def test_run_cli_cannot_start(tmp_path):
    with pytest.raises(runner.CliError, match="Could not start"):
        runner.run_cli([str(tmp_path / "missing-exe")], Feedback())


@pytest.mark.parametrize("ignore_term", [False, True])
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_cancel_stops_child_group_and_cleans_up(tmp_path, ignore_term):
    out = tmp_path / "found.gpkg"
    keep = tmp_path / "found_by_user.txt"  # existed before: must survive
    keep.write_text("mine")
    pidfile = tmp_path / "pids"
    argv = child(tmp_path, f"""
        import signal, subprocess
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # a worker in the same process group, like a DataLoader worker
        w = subprocess.Popen([sys.executable, "-c", "import time, signal; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(f"{{os.getpid()}} {{w.pid}}")
        open({str(tmp_path / '.found.gpkg.tmp-1')!r}, "w").write("partial")
        os.makedirs({str(out) + '.rrsis-work'!r})
        for i in range(100):
            emit({{"event": "progress", "stage": "tiles", "done": i, "total": 100}})
            time.sleep(0.05)
    """)
    fb = Feedback(cancel_after_progress=5)
    with pytest.raises(runner.CliCanceled):
        runner.run_cli(argv, fb, outputs=[str(out)])
    elapsed = time.monotonic() - fb.canceled_at
    assert elapsed < 2.0, elapsed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "found_by_user.txt",
                                                          "pids"]
    deadline = time.monotonic() + 1.0  # SIGKILL is asynchronous: allow teardown to finish
    for pid in map(int, pidfile.read_text().split()):
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), f"process {pid} survived the cancel"


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_remove_partial_outputs_keeps_untouched_files(tmp_path):
    old = tmp_path / "out.gpkg"
    old.write_text("previous result")
    before = runner._snapshot([str(old)])
    (tmp_path / "out.gpkg.rrsis-work").mkdir()
    (tmp_path / "other.tif").write_text("new but not ours")
    removed = runner.remove_partial_outputs([str(old)], before)
    assert [Path(p).name for p in removed] == ["out.gpkg.rrsis-work"]
    assert old.exists() and (tmp_path / "other.tif").exists()


def test_metadata_and_zip(tmp_path):
    """The zip installs as one plugin folder with the metadata QGIS and plugins.qgis.org need."""
    import configparser
    import subprocess
    import tomllib
    import zipfile

    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(repo / "qgis_plugin" / "build_zip.py"), "--out-dir",
                        str(tmp_path)], capture_output=True, text=True, check=True)
    zip_path = Path(r.stdout.strip())
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    assert zip_path == tmp_path / f"rrsis_geo_qgis-{version}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        meta_text = zf.read("rrsis_geo_qgis/metadata.txt").decode()
    assert all(n.startswith("rrsis_geo_qgis/") for n in names)
    for f in ("__init__.py", "provider.py", "algorithm.py", "runner.py", "icon.svg"):
        assert f"rrsis_geo_qgis/{f}" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(meta_text)
    g = cfg["general"]
    assert g["version"] == version
    assert g["hasProcessingProvider"] == "yes" and g["category"] == "Raster"
    assert g["qgisMinimumVersion"] == "3.22" and g["qgisMaximumVersion"] == "4.99"
    for key in ("name", "description", "about", "author", "email", "repository", "tracker",
                "homepage", "icon"):
        assert g.get(key), key
    # same sources → same bytes (reproducible builds)
    again = subprocess.run([sys.executable, str(repo / "qgis_plugin" / "build_zip.py"),
                            "--out-dir", str(tmp_path / "b")], capture_output=True, text=True,
                           check=True)
    assert Path(again.stdout.strip()).read_bytes() == zip_path.read_bytes()
