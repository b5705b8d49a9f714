"""Reliability: what a hostile or unlucky run must never do (README "Errors and exit codes").

Every case runs the real CLI (in this process through click's runner, or as a child process for
signals, locks and dropped permissions) on small generated rasters, with the stand-in network
behind the real weight loader (``tests/standin_cli.py``: the model card and tensors are read and
checked by the package's own code). After an error each case checks: the documented exit code,
exactly one ``rrsis-geo: error:`` line on stderr, no traceback, and that the folder holds exactly
what it held before, byte for byte (no output, no scratch, no temporary file; every input and
every look-alike user file unchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner

import rrsis_geo.model.checkpoint as checkpoint
from rrsis_geo.cli.main import cli
from rrsis_geo.inference.pipeline import work_dir_for
from rrsis_geo.safety import SCRATCH_MARKER
from tests.standin_cli import instantiate_standin, write_standin_weights
from tests.rasters import scene, write_tif

REPO = Path(__file__).resolve().parent.parent
EXPR = "the red roof"


# -- helpers -------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: files by SHA-256, folders and links by kind."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def assert_one_error(code: int, stderr: str, expected: int, match: str | None = None) -> str:
    lines = error_lines(stderr)
    assert code == expected, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error: "), stderr
    assert "Traceback" not in stderr
    if match:
        assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A folder with a raster, stand-in weights and a user's look-alike files."""
    monkeypatch.setattr(checkpoint, "_instantiate", instantiate_standin)
    weights = write_standin_weights(tmp_path / "model")
    src = write_tif(tmp_path / "in.tif", scene(128, 128, [(40, 40, 80, 80)]))
    (tmp_path / "out_notes.csv").write_text("a user's notes\n")
    (tmp_path / "out.gpkg.bak").write_text("a user's backup\n")
    runner = CliRunner()

    def run(*args: str, debug: bool = False):
        argv = (["--debug"] if debug else []) + [str(a) for a in args]
        res = runner.invoke(cli, argv)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        return res

    def segment(*extra: str, src_path=src, out="out.gpkg", expr=EXPR, w=weights):
        return run("segment", src_path, "-e", expr, "-o", tmp_path / out, "--weights", w,
                   "--progress", "none", "--tile-size", "64", *extra)

    return SimpleNamespace(tmp=tmp_path, src=src, weights=weights, run=run, segment=segment)


def refused(env, res, code: int, before: dict[str, str], match: str | None = None) -> str:
    line = assert_one_error(res.exit_code, res.stderr, code, match)
    assert snapshot(env.tmp) == before, "files changed, appeared or vanished"
    return line


# -- outputs never destroy inputs ----------------------------------------------------------------

def test_raster_geopackage_input_is_not_overwritten(env):
    arr = scene(64, 64, [(10, 10, 30, 30)])
    gpkg = env.tmp / "in.gpkg"
    with rasterio.open(gpkg, "w", driver="GPKG", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000)) as dst:
        dst.write(arr)
    before = snapshot(env.tmp)
    refused(env, env.segment(src_path=gpkg, out="in.gpkg"), 2, before, "is the input")


@pytest.mark.parametrize("case", ["prob-is-input", "prob-is-output", "hardlink-output",
                                  "symlink-prob"])
def test_an_output_is_never_an_input_or_another_output(env, case):
    extra: list[str] = []
    out = "out.gpkg"
    if case == "prob-is-input":
        extra = ["--prob-raster", str(env.src)]
    elif case == "prob-is-output":
        extra = ["--prob-raster", str(env.tmp / "out.gpkg")]
    elif case == "hardlink-output":
        os.link(env.src, env.tmp / "alias.gpkg")
        out = "alias.gpkg"
    else:
        os.symlink(env.src, env.tmp / "alias.tif")
        extra = ["--prob-raster", str(env.tmp / "alias.tif")]
    before = snapshot(env.tmp)
    refused(env, env.segment(*extra, out=out), 2, before)


def test_render_never_overwrites_its_raster(env):
    before = snapshot(env.tmp)
    refused(env, env.run("render", env.src, "-o", env.src), 2, before, "is the raster")


def test_segment_many_never_overwrites_an_input_with_its_output(env):
    d = env.tmp / "d"
    d.mkdir()
    with rasterio.open(d / "scene.gpkg", "w", driver="GPKG", width=64, height=64, count=3,
                       dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000)) as dst:
        dst.write(scene(64, 64, []))
    before = snapshot(env.tmp)
    res = env.run("segment-many", d / "scene.gpkg", "-e", EXPR, "--out-dir", d, "--weights",
                  env.weights, "--progress", "none")
    refused(env, res, 2, before, "is the input")


def test_segment_many_refuses_a_busy_or_bad_out_dir(env):
    from rrsis_geo.safety import exclusive_lock

    d = env.tmp / "d"
    d.mkdir()
    (env.tmp / "afile").write_text("x")
    args = ["-e", EXPR, "--weights", env.weights, "--progress", "none"]
    with exclusive_lock(d / ".rrsis-many", "d"):  # another segment-many works in d
        before = snapshot(env.tmp)
        res = env.run("segment-many", env.src, "--out-dir", d, *args)
        refused(env, res, 2, before, "another rrsis-geo run")
    before = snapshot(env.tmp)
    refused(env, env.run("segment-many", env.src, "--out-dir", env.tmp / "afile", *args), 2,
            before)
    refused(env, env.run("segment-many", env.src, "--out-dir", d, "--min-area", "nan", *args),
            2, before)


@pytest.mark.parametrize("cmd", ["dataset", "train", "train-into-weights-folder",
                                 "synth-chips", "evaluate-json"])
def test_other_writing_commands_never_overwrite_an_input(env, cmd):
    labels = env.tmp / "labels.gpkg"
    labels.write_bytes(b"not read: refused before")
    if cmd == "dataset":
        args = ["dataset", "build", env.src, labels, "--out", env.src]
    elif cmd == "train":
        args = ["train", env.tmp, "--out", env.weights]
    elif cmd == "train-into-weights-folder":  # fine-tuning would replace its starting weights
        runs = env.tmp / "runs"
        runs.mkdir()
        start = write_standin_weights(runs / "fianet_tiny")
        args = ["train", env.tmp, "--weights", start, "--out", runs]
    elif cmd == "synth-chips":
        args = ["synth", "chips", env.src, "--count", "1"]
    else:
        args = ["evaluate", env.tmp, "--weights", env.weights, "--json", env.weights]
    before = snapshot(env.tmp)
    refused(env, env.run(*args), 2, before)


@pytest.mark.parametrize("kind", ["user-folder", "file"])
def test_a_look_alike_scratch_folder_is_never_deleted(env, kind):
    work = env.tmp / "out.gpkg.rrsis-work"
    if kind == "user-folder":
        work.mkdir()
        (work / "precious.txt").write_text("mine")
    else:
        work.write_text("a file named like the scratch folder")
    before = snapshot(env.tmp)
    refused(env, env.segment(), 2, before, "not made by rrsis-geo")


@pytest.mark.parametrize("case", ["missing-folder", "missing-prob-folder", "output-is-folder",
                                  "bad-suffix", "bad-layer", "bad-roi", "roi-outside"])
def test_unwritable_outputs_are_refused_before_any_work(env, case, monkeypatch):
    import rrsis_geo.inference.segmenter as segmenter

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(segmenter.Segmenter, "__init__", no_model)
    args: dict = {}
    extra: list[str] = []
    if case == "missing-folder":
        args["out"] = "nope/out.gpkg"
    elif case == "missing-prob-folder":
        extra = ["--prob-raster", str(env.tmp / "nope" / "p.tif")]
    elif case == "output-is-folder":
        (env.tmp / "folder.gpkg").mkdir()
        args["out"] = "folder.gpkg"
    elif case == "bad-suffix":
        args["out"] = "out.xyz"
    elif case == "bad-layer":
        extra = ["--layer", "gpkg_contents"]
    elif case == "bad-roi":
        extra = ["--roi", "1,2,3"]
    else:
        extra = ["--roi", "0,0,10,10"]  # far from the raster
    before = snapshot(env.tmp)
    refused(env, env.segment(*extra, **args), 2, before)


# -- options, sentences, model cards, rasters: validated up front ---------------------------------

@pytest.mark.parametrize("opt", [("--min-score", "nan"), ("--min-area", "nan"),
                                 ("--simplify", "inf"), ("--threshold", "nan"),
                                 ("--gsd", "nan"), ("--gsd", "inf"), ("--min-score", "2"),
                                 ("--overlap", "64"), ("--value-range", "0,nan")])
def test_non_finite_or_out_of_range_options_exit_2(env, opt):
    before = snapshot(env.tmp)
    refused(env, env.segment(*opt), 2, before, opt[0])


@pytest.mark.parametrize("expr", ["the red \udcff roof", "the red\x00roof", "the \x1b[31m roof",
                                  "  "])
def test_bad_sentences_exit_3(env, expr):
    before = snapshot(env.tmp)
    refused(env, env.segment(expr=expr), 3, before, "expression")


@pytest.mark.parametrize("meta,tensors,match", [
    ({"std": [0.0, 0.0, 0.0]}, None, "std"),
    ({"mean": "abc"}, None, "mean"),
    ({"mean": [0.5, 0.5]}, None, "mean"),
    ({"gsd": float("nan")}, None, "gsd"),
    ({"gsd": "0.25 m"}, None, "gsd"),
    ({"input_size": 0}, None, "input_size"),
    ({"trained_classes": "tree"}, None, "trained_classes"),
    ({"trained_classes": ["tree", 3]}, None, "trained_classes"),
    (None, {"std": torch.tensor([float("nan"), 0.2, 0.2]).view(1, 3, 1, 1)}, "NaN"),
])
def test_bad_model_cards_and_nan_weights_exit_4(env, meta, tensors, match):
    w = write_standin_weights(env.tmp / "bad", meta=meta, tensors=tensors)
    before = snapshot(env.tmp)
    refused(env, env.segment(w=w), 4, before, match)


def test_weights_that_produce_nan_are_refused(env, monkeypatch):
    from tests.standin import RedSegmenter

    monkeypatch.setattr(RedSegmenter, "segment_image",
                        lambda self, image, text: torch.full_like(image[:, :2], float("nan")))
    before = snapshot(env.tmp)
    refused(env, env.segment(), 4, before, "NaN")


def test_malicious_pickle_is_refused_and_named(env):
    marker = env.tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, env.tmp / "evil.pth")
    before = snapshot(env.tmp)
    line = refused(env, env.segment(w=env.tmp / "evil.pth"), 4, before, "refusing")
    assert f"{os.system.__module__}.system" in line and not marker.exists()


def test_complex_raster_exit_3(env):
    arr = (np.ones((3, 64, 64)) + 1j * np.ones((3, 64, 64))).astype(np.complex64)
    src = write_tif(env.tmp / "complex.tif", arr)
    before = snapshot(env.tmp)
    refused(env, env.segment(src_path=src), 3, before, "complex")


def test_collapsed_geographic_grid_near_the_pole_exit_3(env):
    src = write_tif(env.tmp / "pole.tif", scene(200, 200, []), crs="EPSG:4326",
                    transform=Affine(1e-5, 0, 10.0, 0, -1e-5, 89.999))
    before = snapshot(env.tmp)
    refused(env, env.segment("--gsd", "0.25", src_path=src), 3, before, "collapses")


@pytest.mark.parametrize("what", ["input", "weights"])
def test_a_folder_given_as_a_file_is_one_line(env, what):
    (env.tmp / "adir").mkdir()
    before = snapshot(env.tmp)
    if what == "input":
        refused(env, env.segment(src_path=env.tmp / "adir"), 3, before, "directory")
    else:
        refused(env, env.segment(w=env.tmp / "adir"), 4, before)


# -- nodata: NaN and inf pixels never poison a result ----------------------------------------------

def test_undeclared_nan_and_inf_pixels_are_nodata(env):
    arr = scene(256, 256, [(100, 100, 150, 150)], dtype=np.float32)
    clean = write_tif(env.tmp / "clean.tif", arr)
    arr = arr.copy()
    lattice = np.zeros(arr.shape[1:], bool)
    lattice[::3, ::3] = True  # in every block the overview averages: NaN, undeclared
    lattice[100:150, 100:150] = False  # (the object itself stays whole)
    arr[:, lattice] = np.nan
    arr[:, 200:202, 30:60] = np.inf
    arr[0, 220, 220] = -np.inf
    dirty = write_tif(env.tmp / "dirty.tif", arr)
    for src, out in ((clean, "clean.gpkg"), (dirty, "dirty.gpkg")):
        res = env.segment("--prob-raster", str(env.tmp / f"{out}.tif"), src_path=src, out=out)
        assert res.exit_code == 0, res.output
    a = pyogrio.read_dataframe(env.tmp / "clean.gpkg")
    b = pyogrio.read_dataframe(env.tmp / "dirty.gpkg")
    assert len(a) == len(b) == 1
    assert abs(a["score"][0] - b["score"][0]) < 0.05
    assert abs(a["area_m2"][0] - b["area_m2"][0]) < 0.02 * a["area_m2"][0]
    with rasterio.open(env.tmp / "dirty.gpkg.tif") as p:
        mask = p.dataset_mask()
    assert not mask[lattice].any() and not mask[200:202, 30:60].any()  # nodata
    assert mask[1::3, 1::3][:66].all()  # the rest valid


# -- unexpected errors, disk full ------------------------------------------------------------------

def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(env, monkeypatch):
    from rrsis_geo.inference.scene import SceneSelector

    def boom(self, *a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(SceneSelector, "select", boom)
    before = snapshot(env.tmp)
    line = refused(env, env.segment(), 1, before, "RuntimeError: boom")
    assert "--debug" in line
    res = env.run("segment", env.src, "-e", EXPR, "-o", env.tmp / "out.gpkg", "--weights",
                  env.weights, "--progress", "none", debug=True)
    assert res.exit_code == 1 and "Traceback" in res.stderr
    assert snapshot(env.tmp) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_in_the_accumulator_leaves_nothing(env, small_disk):
    src = write_tif(env.tmp / "big.tif", scene(400, 400, [(100, 100, 150, 150)]))  # 1.3 MB sums
    before = snapshot(env.tmp)
    res = env.run("segment", src, "-e", EXPR, "-o", small_disk / "out.gpkg", "--weights",
                  env.weights, "--progress", "none", "--tile-size", "64")
    assert_one_error(res.exit_code, res.stderr, 2, "no space left")
    assert snapshot(env.tmp) == before and os.listdir(small_disk) == []


def test_full_prob_raster_folder_leaves_no_vector(env, small_disk):
    with open(small_disk / "filler", "wb") as f:  # fill the disk
        with pytest.raises(OSError):
            for _ in range(64):
                f.write(b"\0" * 65536)
                f.flush()
    before = snapshot(env.tmp)
    res = env.segment("--prob-raster", str(small_disk / "p.tif"))
    assert_one_error(res.exit_code, res.stderr, 2)
    assert snapshot(env.tmp) == before and os.listdir(small_disk) == ["filler"]


# -- the QGIS runner removes only what it asked for ------------------------------------------------

def test_qgis_runner_removes_only_its_own_files(tmp_path):
    sys.path.insert(0, str(REPO / "qgis_plugin"))
    from rrsis_geo_qgis import runner

    out, prob = tmp_path / "result.gpkg", tmp_path / "bad.tif"
    old_work = tmp_path / "bad.tif.rrsis-work"  # an earlier run's tiles: not this run's
    old_work.mkdir()
    (old_work / "mine.txt").write_text("x")
    (tmp_path / "result_old.csv").write_text("old")
    before = runner._snapshot([str(out), str(prob)])
    # during the run: the user saves look-alikes, the CLI writes its files
    (tmp_path / "result_notes.csv").write_text("user")
    (tmp_path / "bad_backup.txt").write_text("user")
    (tmp_path / "result_old.csv").write_text("edited by the user")
    ours = [out, tmp_path / ".result.gpkg.1a2b3c4d.tmp.gpkg", tmp_path / ".bad.tif.x.cog.tif"]
    for p in ours:
        p.write_text("partial")
    (tmp_path / "result.gpkg.rrsis-work").mkdir()
    removed = runner.remove_partial_outputs([str(out), str(prob)], before)
    assert sorted(Path(p).name for p in removed) == sorted(
        [p.name for p in ours] + ["result.gpkg.rrsis-work"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.tif.rrsis-work", "bad_backup.txt", "result_notes.csv", "result_old.csv"]


def test_qgis_runner_refuses_a_nul_byte_without_a_traceback(tmp_path):
    sys.path.insert(0, str(REPO / "qgis_plugin"))
    from rrsis_geo_qgis import runner

    class Feedback:
        def __getattr__(self, name):
            return lambda *a, **k: False

    argv = runner.build_segment_command(sys.executable, str(tmp_path / "in.tif"), "the\0roof",
                                        str(tmp_path / "o.gpkg"))
    with pytest.raises(runner.CliError, match="NUL"):
        runner.run_cli(argv, Feedback(), outputs=[str(tmp_path / "o.gpkg")])
    assert list(tmp_path.iterdir()) == []


# -- child processes: SIGTERM, kill -9 + --resume, a concurrent run, dropped permissions ----------

def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _start(args: list[str], **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.standin_cli", *map(str, args)],
                            cwd=REPO, env=_child_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_reached(hold: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until the child waits at its hold point (see tests/standin_cli.py)."""
    reached = Path(f"{hold}.reached")
    deadline = time.monotonic() + timeout
    while not reached.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was interrupted: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("the run never reached its hold point")
        time.sleep(0.05)
    reached.unlink()


def test_sigterm_kill9_resume_and_a_concurrent_run(env):
    """SIGTERM keeps the tiles (exit 143) and a concurrent run on the same output is refused
    (exit 2) without touching them; after kill -9 too, --resume finishes with polygons and a
    probability raster identical to a clean run."""
    tmp = env.tmp
    src = write_tif(tmp / "big.tif", scene(192, 256, [(60, 60, 100, 110)]))
    hold = tmp / "hold"
    args = ["segment", src, "-e", EXPR, "-o", tmp / "out.gpkg", "--weights", env.weights,
            "--tile-size", "64", "--overlap", "16", "--batch-size", "1", "--progress", "jsonl",
            "--prob-raster", tmp / "out.tif"]
    res = env.run("segment", src, "-e", EXPR, "-o", tmp / "ref.gpkg", "--weights", env.weights,
                  "--tile-size", "64", "--overlap", "16", "--batch-size", "1", "--progress",
                  "none", "--prob-raster", tmp / "ref.tif")
    assert res.exit_code == 0, res.output
    work = work_dir_for(tmp / "out.gpkg")

    hold.write_text("")
    procs: list[subprocess.Popen] = []
    try:
        a = _start(args, RRSIS_TEST_HOLD=str(hold), RRSIS_TEST_HOLD_AFTER="7")
        procs.append(a)
        _wait_reached(hold, a)
        listing = snapshot(work)
        b = _start(args)  # same output while the first run works
        procs.append(b)
        _, err_b = b.communicate(timeout=300)
        assert_one_error(b.returncode, err_b, 2, "another rrsis-geo run")
        assert snapshot(work) == listing and not (tmp / "out.gpkg").exists()
        a.send_signal(signal.SIGTERM)
        _, err_a = a.communicate(timeout=60)
        assert_one_error(a.returncode, err_a, 143, "--resume")
        assert (work / SCRATCH_MARKER).is_file() and (work / "done_tiles.txt").read_text()
        assert not (tmp / "out.gpkg").exists() and not (tmp / "out.tif").exists()

        d = _start(args + ["--resume"], RRSIS_TEST_HOLD=str(hold), RRSIS_TEST_HOLD_AFTER="6")
        procs.append(d)
        _wait_reached(hold, d)
        d.kill()  # kill -9
        d.wait(timeout=60)
        hold.unlink()
        e = _start(args + ["--resume"])
        procs.append(e)
        out_e, err_e = e.communicate(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert e.returncode == 0, err_e
    result = json.loads(out_e.strip().splitlines()[-1])
    assert 0 < result["model_tiles"] < result["tiles"]  # it did resume
    assert not work.exists()
    ref = pyogrio.read_dataframe(tmp / "ref.gpkg")
    got = pyogrio.read_dataframe(tmp / "out.gpkg")
    assert len(got) == len(ref) == 1 and got.geometry[0].equals(ref.geometry[0])
    with rasterio.open(tmp / "ref.tif") as r, rasterio.open(tmp / "out.tif") as o:
        assert np.array_equal(r.read(), o.read())


def test_without_permissions_one_line_and_nothing_left(env):
    """Unreadable input (3), unreadable weights (4), read-only output folder (2) — as a user
    without DAC override (root drops it with setpriv)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("setpriv is needed to drop root's DAC capabilities")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    tmp = env.tmp
    ro = tmp / "ro"
    ro.mkdir()
    locked_src = write_tif(tmp / "locked.tif", scene(64, 64, []))
    locked_w = write_standin_weights(tmp / "locked")
    cases = {
        "input": (["segment", locked_src, "-e", EXPR, "-o", tmp / "a.gpkg"], 3),
        "weights": (["segment", env.src, "-e", EXPR, "-o", tmp / "b.gpkg", "--weights",
                     locked_w], 4),
        "read-only folder": (["segment", env.src, "-e", EXPR, "-o", ro / "c.gpkg"], 2),
    }
    # one child runs the three cases in process (imports once), without DAC override
    driver = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from tests.standin_cli import install\n"
        "install()\n"
        "from rrsis_geo.cli.main import cli\n"
        "out = {}\n"
        "for name, args in json.loads(sys.argv[1]).items():\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    out[name] = [r.exit_code, r.stderr, repr(r.exception)]\n"
        "print(json.dumps(out))\n")
    argv = {name: [str(a) for a in args] + ["--progress", "none", "--tile-size", "64"]
            + ([] if "--weights" in map(str, args) else ["--weights", str(env.weights)])
            for name, (args, _) in cases.items()}
    os.chmod(locked_src, 0)
    os.chmod(locked_w, 0)
    os.chmod(ro, 0o555)
    try:
        before = snapshot(tmp) if os.geteuid() == 0 else None
        proc = subprocess.run([*prefix, sys.executable, "-c", driver, json.dumps(argv)],
                              cwd=REPO, env=_child_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        for name, (_, code) in cases.items():
            rc, stderr, exc = results[name]
            assert_one_error(rc, stderr, code)
        if before is not None:
            assert snapshot(tmp) == before
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o755)
        os.chmod(locked_src, 0o644)
        os.chmod(locked_w, 0o644)


# -- the guard itself (for every command that writes, e.g. a dataset builder) ----------------------

def test_check_outputs_unit(tmp_path):
    from rrsis_geo.errors import OutputError
    from rrsis_geo.safety import check_outputs

    src = tmp_path / "a.tif"
    src.write_bytes(b"x")
    check_outputs([src, None, tmp_path / "missing.tif"], [tmp_path / "b.gpkg", None])
    # a folder output may be nested in folders that do not exist yet (created with parents)
    check_outputs([], [("--out", tmp_path / "runs" / "demo")],
                  folders_ok=[tmp_path / "runs" / "demo"])
    for outputs in ([src], [tmp_path / "." / "a.tif"], [tmp_path / "c.gpkg", tmp_path / "c.gpkg"],
                    [tmp_path], [tmp_path / "nope" / "x.gpkg"]):
        with pytest.raises(OutputError):
            check_outputs([src], outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # the probe is gone


def test_scratch_is_exclusive_and_only_our_files_go(tmp_path):
    from rrsis_geo.errors import OutputError
    from rrsis_geo.safety import Scratch

    work = tmp_path / "o.gpkg.rrsis-work"
    s1 = Scratch.claim(work, resume=False, output=tmp_path / "o.gpkg")
    assert s1.created and Scratch.is_ours(work)
    with pytest.raises(OutputError, match="another rrsis-geo run"):
        Scratch.claim(work, resume=True, output=tmp_path / "o.gpkg")
    (work / "sums.f32").write_bytes(b"1234")
    (work / "stray.txt").write_text("someone else's")
    s1.release(keep=True)
    s2 = Scratch.claim(work, resume=True, output=tmp_path / "o.gpkg")  # idle and ours: reused
    assert not s2.created and (work / "sums.f32").exists()
    s2.release(keep=False)
    assert sorted(p.name for p in work.iterdir()) == ["stray.txt"]  # never deleted
