"""Checks of the rrsis_geo QGIS plugin that run inside real headless QGIS.

Run one check per process (QGIS must never share a process with torch/numpy 2):

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/checks.py CHECK WORKDIR

The process prints one line ``CHECK-RESULT {"ok": ..., "detail": ...}`` and exits with
``os._exit`` (``QgsApplication.exitQgis()`` segfaults at interpreter exit on Debian's 3.22).
Exit code 0 = passed, 1 = failed, 77 = skipped (the reason is in ``detail``).

Executables are injected, never searched for: the fake CLI through a wrapper script passed via
$RRSIS_GEO_EXE or the provider setting; the real CLI through $RRSIS_GEO_REAL_EXE.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLUGIN_PARENT = REPO / "qgis_plugin"
FAKE_CLI = HERE / "fake_cli.py"
SKIP = 77
_KEEP: list = []


class Skip(Exception):
    """The check cannot run here; the message says why."""


# --------------------------------------------------------------------------------------------
# QGIS set-up
# --------------------------------------------------------------------------------------------
def start_qgis(plugin_parent: Path = PLUGIN_PARENT):
    """Start headless QGIS + Processing and register the plugin's provider (via classFactory)."""
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    for p in ("/usr/share/qgis/python/plugins", str(plugin_parent)):
        if p not in sys.path:
            sys.path.insert(0, p) if p == str(plugin_parent) else sys.path.append(p)
    from processing.core.Processing import Processing

    Processing.initialize()
    import rrsis_geo_qgis

    plugin = rrsis_geo_qgis.classFactory(None)
    plugin.initProcessing()
    _KEEP.extend([app, plugin])  # garbage-collecting the QgsApplication would end QGIS
    return app, plugin


def make_raster(path: Path, epsg: int | None = 32633, size: int = 64,
                gcps_only: bool = False) -> Path:
    """A small 3-band uint8 GeoTIFF (0.5 m pixels); ``epsg=None`` → no CRS; ``gcps_only``:
    georeferenced by four ground control points instead of a geotransform."""
    from osgeo import gdal, osr

    gdal.UseExceptions()
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 3, gdal.GDT_Byte)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg or 32633)
    if gcps_only:
        corners = [(0, 0), (size, 0), (0, size), (size, size)]
        ds.SetGCPs([gdal.GCP(500000.0 + 0.5 * c, 4000000.0 - 0.5 * r, 0.0, c, r)
                    for c, r in corners], srs.ExportToWkt())
    else:
        ds.SetGeoTransform((500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5))
        if epsg is not None:
            ds.SetProjection(srs.ExportToWkt())
    for b in range(1, 4):
        ds.GetRasterBand(b).Fill(40 * b)
    ds = None
    return path


def fake_exe(workdir: Path) -> Path:
    """An executable ``rrsis-geo`` wrapper running fake_cli.py with this interpreter."""
    exe = workdir / "bin" / "rrsis-geo"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLI}" "$@"\n')
    exe.chmod(0o755)
    return exe


def recording_feedback():
    """A QgsProcessingFeedback that records what the algorithm reports."""
    from qgis.core import QgsProcessingFeedback

    class Rec(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.progress: list[float] = []
            self.infos: list[str] = []
            self.warnings: list[str] = []
            self.commands: list[str] = []
            self.console: list[str] = []
            self.errors: list[str] = []
            self.progressChanged.connect(self.progress.append)

        def pushInfo(self, text):  # noqa: N802
            self.infos.append(text)

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

        def pushCommandInfo(self, text):  # noqa: N802
            self.commands.append(text)

        def pushConsoleInfo(self, text):  # noqa: N802
            self.console.append(text)

        def reportError(self, text, fatalError=False):  # noqa: N802
            self.errors.append(text)

    return Rec()


def run_alg(params: dict, feedback=None):
    """processing.run → (results, None) or (None, exception text)."""
    import processing
    from qgis.core import QgsProcessingException

    try:
        return processing.run("rrsis_geo:segment", params, feedback=feedback), None
    except QgsProcessingException as exc:
        return None, str(exc)


def base_params(workdir: Path, raster: Path, **extra) -> dict:
    params = {"INPUT": str(raster), "EXPRESSION": "the red building in the upper left",
              "OUTPUT": str(workdir / "out.gpkg")}
    params.update(extra)
    return params


def error_text(feedback) -> str:
    """What the user sees: the exception text and everything reported as an error."""
    return "\n".join(feedback.errors)


def assert_clean(workdir: Path, stem: str = "out") -> None:
    left = sorted(p.name for p in workdir.iterdir() if p.name.lstrip(".").startswith(stem))
    assert not left, f"partial outputs left behind: {left}"


# --------------------------------------------------------------------------------------------
# Checks with the fake CLI
# --------------------------------------------------------------------------------------------
def check_provider_loads(workdir: Path) -> str:
    """Provider and algorithm register; parameters as specified, even with no CLI anywhere."""
    os.environ.pop("RRSIS_GEO_EXE", None)
    os.environ["PATH"] = "/usr/bin:/bin"
    from qgis.core import (QgsApplication, QgsProcessingParameterDefinition,
                           QgsProcessingParameterRasterDestination,
                           QgsProcessingParameterVectorDestination)

    start_qgis()
    reg = QgsApplication.processingRegistry()
    prov = reg.providerById("rrsis_geo")
    assert prov is not None, "provider rrsis_geo not registered"
    alg = reg.algorithmById("rrsis_geo:segment")
    assert alg is not None, "algorithm rrsis_geo:segment missing"
    assert alg.displayName() == "Segment referred object", alg.displayName()
    names = [p.name() for p in alg.parameterDefinitions()]
    for n in ("INPUT", "EXPRESSION", "WEIGHTS", "DEVICE", "MODE", "THRESHOLD", "MIN_AREA",
              "SIMPLIFY", "TILE_SIZE", "OVERLAP", "OUTPUT", "PROB_RASTER"):
        assert n in names, f"parameter {n} missing: {names}"
    adv = QgsProcessingParameterDefinition.FlagAdvanced
    for n in ("TILE_SIZE", "OVERLAP"):
        assert alg.parameterDefinition(n).flags() & adv, f"{n} is not advanced"
    for n in ("INPUT", "EXPRESSION", "THRESHOLD"):
        assert not alg.parameterDefinition(n).flags() & adv, f"{n} should not be advanced"
    assert alg.parameterDefinition("WEIGHTS").flags() & \
        QgsProcessingParameterDefinition.FlagOptional, "WEIGHTS must be optional"
    assert isinstance(alg.parameterDefinition("OUTPUT"), QgsProcessingParameterVectorDestination)
    pr = alg.parameterDefinition("PROB_RASTER")
    assert isinstance(pr, QgsProcessingParameterRasterDestination)
    assert not pr.createByDefault(), "probability raster must be opt-in"
    assert alg.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda"]
    assert prov.defaultVectorFileExtension(True) == "gpkg"
    return f"{len(names)} parameters; provider '{prov.longName()}'"


def check_run_ok(workdir: Path) -> str:
    """A run returns a valid GeoPackage layer in the raster's CRS; progress, messages, command."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    os.environ["RRSIS_FAKE_ARGV_LOG"] = str(workdir / "argv.json")
    os.environ["RRSIS_FAKE_MODE"] = "noisy"
    os.environ["PYTHONPATH"] = "/should/not/reach/the/cli"
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    start_qgis()
    fb = recording_feedback()
    t0 = time.monotonic()
    res, err = run_alg(base_params(workdir, raster, THRESHOLD=0.4, MODE=1, TILE_SIZE=128,
                                   PROB_RASTER=str(workdir / "prob.tif")), fb)
    dt = time.monotonic() - t0
    assert err is None, err
    out = res["OUTPUT"]
    assert out == str(workdir / "out.gpkg"), out
    lyr = QgsVectorLayer(out, "found", "ogr")
    assert lyr.isValid(), "output does not load as a vector layer"
    rl = QgsRasterLayer(str(raster), "r")
    assert lyr.crs() == rl.crs(), (lyr.crs().authid(), rl.crs().authid())
    assert [f.name() for f in lyr.fields()][-4:] == ["expression", "score", "area_m2", "rank"], \
        [f.name() for f in lyr.fields()]
    assert lyr.featureCount() == 2, lyr.featureCount()  # MODE=1 → --mode all → 2 fake objects
    assert res["OBJECTS"] == 2, res
    assert res["PROB_RASTER"] == str(workdir / "prob.tif") and (workdir / "prob.tif").exists()
    # progress: stage-weighted, monotonic, reaches 100, with values in between
    p = fb.progress
    assert p and p == sorted(p) and p[-1] == 100.0, p
    assert any(0 < v < 100 for v in p), p
    # messages: info, warning, stray stdout/stderr lines as console output
    assert any("fake model on auto" in m for m in fb.infos), fb.infos
    assert any("a fake warning" in m for m in fb.warnings), fb.warnings
    assert any("this is not JSON" in m for m in fb.console), fb.console
    assert any("UserWarning" in m for m in fb.console), fb.console
    # the logged command is the equivalent shell command
    assert len(fb.commands) == 1 and "--progress jsonl" in fb.commands[0], fb.commands
    cmd = fb.commands[0]
    assert "'the red building in the upper left'" in cmd, cmd
    logged = json.loads((workdir / "argv.json").read_text())
    argv = logged["argv"]
    assert argv[:2] == ["segment", str(raster)], argv
    assert argv[argv.index("-e") + 1] == "the red building in the upper left"
    assert argv[argv.index("--threshold") + 1] == "0.4"
    assert argv[argv.index("--mode") + 1] == "all"
    assert argv[argv.index("--tile-size") + 1] == "128"
    assert "--overlap" not in argv and "--weights" not in argv and "--max-objects" not in argv
    assert logged["pythonpath"] is None, "QGIS's PYTHONPATH leaked into the CLI's environment"
    import shlex

    assert shlex.split(cmd)[1:] == argv, (cmd, argv)
    return f"run took {dt:.2f} s; {len(p)} progress updates; command: {cmd}"


def check_roi(workdir: Path) -> str:
    """An extent in another CRS reaches the CLI as --roi bounds in the raster's CRS."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    os.environ["RRSIS_FAKE_ARGV_LOG"] = str(workdir / "argv.json")
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject,
                           QgsRectangle)

    start_qgis()
    # the raster's top-left quarter (x 500000..500016, y 3999984..4000000), given in EPSG:4326
    utm, wgs = QgsCoordinateReferenceSystem("EPSG:32633"), QgsCoordinateReferenceSystem("EPSG:4326")
    quarter = QgsRectangle(500000.0, 3999984.0, 500016.0, 4000000.0)
    ll = QgsCoordinateTransform(utm, wgs, QgsProject.instance()).transformBoundingBox(quarter)
    extent = f"{ll.xMinimum()},{ll.xMaximum()},{ll.yMinimum()},{ll.yMaximum()} [EPSG:4326]"
    res, err = run_alg(base_params(workdir, raster, EXTENT=extent))
    assert err is None, err
    argv = json.loads((workdir / "argv.json").read_text())["argv"]
    xmin, ymin, xmax, ymax = (float(v) for v in argv[argv.index("--roi") + 1].split(","))
    # a lon/lat box around the quarter, transformed back: the quarter plus a little margin
    assert 499999.0 < xmin <= 500000.0 and 500016.0 <= xmax < 500017.0, (xmin, xmax)
    assert 3999983.0 < ymin <= 3999984.0 and 4000000.0 <= ymax < 4000001.0, (ymin, ymax)
    os.remove(workdir / "argv.json")
    res, err = run_alg(base_params(workdir, raster, OUTPUT=str(workdir / "out2.gpkg")))
    assert err is None, err
    argv = json.loads((workdir / "argv.json").read_text())["argv"]
    assert "--roi" not in argv, argv
    return f"--roi {xmin:.2f},{ymin:.2f},{xmax:.2f},{ymax:.2f}"


def check_zero_objects(workdir: Path) -> str:
    """Zero objects = success with a valid empty layer and a warning; temporary output."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    os.environ["RRSIS_FAKE_MODE"] = "zero"
    from qgis.core import QgsVectorLayer

    start_qgis()
    fb = recording_feedback()
    res, err = run_alg(base_params(workdir, raster, OUTPUT="TEMPORARY_OUTPUT"), fb)
    assert err is None, err
    assert res["OUTPUT"].endswith(".gpkg"), res  # temporary outputs are GeoPackages too
    lyr = QgsVectorLayer(res["OUTPUT"], "found", "ogr")
    assert lyr.isValid() and lyr.featureCount() == 0
    assert res["OBJECTS"] == 0
    assert any("No object matched" in w for w in fb.warnings), fb.warnings
    return "empty layer, warning shown"


def check_setting_wins(workdir: Path) -> str:
    """The provider setting takes precedence over $RRSIS_GEO_EXE."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(workdir / "nonexistent" / "rrsis-geo")
    start_qgis()
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.setSettingValue("RRSIS_GEO_EXECUTABLE", str(fake_exe(workdir)))
    fb = recording_feedback()
    res, err = run_alg(base_params(workdir, raster), fb)
    assert err is None, err
    assert any("Processing provider setting" in m for m in fb.infos), fb.infos
    ProcessingConfig.setSettingValue("RRSIS_GEO_EXECUTABLE", "")
    return "setting used"


def _cancel_check(workdir: Path, mode: str) -> str:
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    os.environ["RRSIS_FAKE_MODE"] = mode
    os.environ["RRSIS_FAKE_ARGV_LOG"] = str(workdir / "argv.json")
    start_qgis()
    fb = recording_feedback()
    state: dict = {}

    def on_progress(value: float) -> None:
        # cancel once the child is busy with tiles (it has written a temp file and scratch dir)
        if value > 12 and "t" not in state:
            state["t"] = time.monotonic()
            fb.cancel()

    fb.progressChanged.connect(on_progress)
    res, err = run_alg(base_params(workdir, raster), fb)
    t_stop = time.monotonic() - state["t"]
    assert "t" in state, "never reached the tiles stage"
    assert res is None and err is not None, "a cancelled run must not report success"
    assert "Cancelled" in err or "Cancelled" in error_text(fb), (err, fb.errors)
    assert t_stop < 2.0, f"child stopped {t_stop:.2f} s after cancel (limit 2 s)"
    assert_clean(workdir)
    # the child (and its process group) is gone
    import subprocess

    out = subprocess.run(["pgrep", "-f", str(FAKE_CLI)], capture_output=True, text=True)
    pids = [p for p in out.stdout.split() if int(p) != os.getpid()]
    assert not pids, f"fake CLI still running: {pids}"
    return f"stopped {t_stop:.2f} s after cancel; no output left"


def check_cancel(workdir: Path) -> str:
    """Cancel mid-run: child stopped within 2 s, temp file and scratch folder removed."""
    return _cancel_check(workdir, "slow")


def check_cancel_stubborn(workdir: Path) -> str:
    """A child that ignores SIGTERM is killed after the grace period, still within 2 s."""
    return _cancel_check(workdir, "slow_stubborn")


def check_background_task(workdir: Path) -> str:
    """The dialog's way of running: a QgsProcessingAlgRunnerTask on a worker thread, then
    cancelled through the task (what the Cancel button does)."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                           QgsProject)

    app, _ = start_qgis()
    reg = QgsApplication.processingRegistry()

    def run_task(mode: str, cancel_at: float | None, out: str):
        os.environ["RRSIS_FAKE_MODE"] = mode
        alg = reg.createAlgorithmById("rrsis_geo:segment")
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        fb = recording_feedback()
        params = base_params(workdir, raster, OUTPUT=str(workdir / out))
        task = QgsProcessingAlgRunnerTask(alg, params, context, fb)
        done: dict = {}
        task.executed.connect(lambda ok, results: done.update(ok=ok, results=results))
        QgsApplication.taskManager().addTask(task)
        t0, t_cancel = time.monotonic(), None
        while "ok" not in done and time.monotonic() - t0 < 60:
            app.processEvents()
            if cancel_at is not None and t_cancel is None and max(fb.progress, default=0) >= cancel_at:
                t_cancel = time.monotonic()
                task.cancel()
            time.sleep(0.01)
        return done, fb, t_cancel

    done, fb, _ = run_task("ok", None, "first.gpkg")
    assert done.get("ok") is True, (done, fb.errors)
    assert Path(done["results"]["OUTPUT"]).is_file()
    done, fb, t_cancel = run_task("slow", 12, "out.gpkg")
    assert t_cancel is not None and done.get("ok") is False, done
    stop = time.monotonic() - t_cancel
    assert stop < 2.0, stop
    assert_clean(workdir)
    return f"background run ok; cancelled task finished {stop:.2f} s after Cancel"


EXIT_EXPECT = {
    2: "rejected the parameters",
    3: "input raster or the expression cannot be used",
    4: "model weights could not be loaded",
    5: "ran out of memory",
}


def check_exit_codes(workdir: Path) -> str:
    """Each documented exit code becomes a clear message (with the CLI's own line), no traceback."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    start_qgis()
    seen = []
    for code, expect in list(EXIT_EXPECT.items()) + [("sigkill", "out-of-memory killer")]:
        os.environ["RRSIS_FAKE_MODE"] = "sigkill" if code == "sigkill" else f"exit:{code}"
        fb = recording_feedback()
        res, err = run_alg(base_params(workdir, raster), fb)
        assert res is None, f"exit {code} reported success"
        text = f"{err}\n{error_text(fb)}"
        assert expect in text, f"exit {code}: {expect!r} not in {text!r}"
        assert "Traceback" not in text, text
        if code == 3:
            assert "cannot read raster" in text, text  # the CLI's own error line is shown
        assert_clean(workdir)
        seen.append(str(code))
    return "codes " + ", ".join(seen)


def check_bad_raster(workdir: Path) -> str:
    """A raster the CLI cannot use (georeferenced by GCPs only): its exit 3 is reported as a
    clear message."""
    raster = make_raster(workdir / "gcps.tif", gcps_only=True)
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    os.environ["RRSIS_FAKE_MODE"] = "ok"
    start_qgis()
    fb = recording_feedback()
    res, err = run_alg(base_params(workdir, raster), fb)
    text = f"{err}\n{error_text(fb)}"
    assert res is None
    assert "cannot be used (exit code 3)" in text and "GCPs only" in text, text
    assert "Traceback" not in text, text
    # an output extension that names no vector format is refused before anything runs
    fb2 = recording_feedback()
    res, err = run_alg(base_params(workdir, raster, OUTPUT=str(workdir / "o.xyz")), fb2)
    assert res is None and ".gpkg, .geojson" in f"{err}\n{error_text(fb2)}", (err, fb2.errors)
    assert not fb2.commands, "the CLI must not be started"
    return text.strip().splitlines()[0]


def check_missing_executable(workdir: Path) -> str:
    """Installed from the zip (no repo .venv beside it), no setting, env or PATH: clear message."""
    zips = sorted((REPO / "dist").glob("rrsis_geo_qgis-*.zip")) if (REPO / "dist").exists() else []
    zip_path = os.environ.get("RRSIS_QGIS_ZIP") or (str(zips[-1]) if zips else "")
    if not zip_path:
        raise Skip("no plugin zip: run qgis_plugin/build_zip.py first")
    plugins = workdir / "profile_plugins"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    os.environ.pop("RRSIS_GEO_EXE", None)
    os.environ["PATH"] = "/usr/bin:/bin"
    raster = make_raster(workdir / "scene.tif")
    start_qgis(plugin_parent=plugins)
    import rrsis_geo_qgis

    assert Path(rrsis_geo_qgis.__file__).resolve().is_relative_to(plugins.resolve())
    fb = recording_feedback()
    res, err = run_alg(base_params(workdir, raster), fb)
    text = f"{err}\n{error_text(fb)}"
    assert res is None
    assert "rrsis-geo command-line tool was not found" in text, text
    assert "Settings > Options > Processing > Providers > rrsis_geo" in text, text
    assert "RRSIS_GEO_EXE" in text, text
    assert "Traceback" not in text, text
    # a configured path that does not exist is reported as such (not silently replaced)
    os.environ["RRSIS_GEO_EXE"] = str(workdir / "nowhere" / "rrsis-geo")
    fb = recording_feedback()
    res, err = run_alg(base_params(workdir, raster), fb)
    text = f"{err}\n{error_text(fb)}"
    assert res is None and "RRSIS_GEO_EXE points to" in text and "does not exist" in text, text
    return text.strip().splitlines()[0]


# --------------------------------------------------------------------------------------------
# End to end with the real CLI and the demo model
# --------------------------------------------------------------------------------------------
def _real_exe() -> str:
    exe = os.environ.get("RRSIS_GEO_REAL_EXE", "")
    if not exe or not os.access(exe, os.X_OK):
        raise Skip(f"real rrsis-geo CLI not available ({exe or 'RRSIS_GEO_REAL_EXE unset'})")
    return exe


def _real_scene() -> tuple[Path, str]:
    """The generated scene and its sentence for the real-CLI checks (skipped without them);
    the plugin is pointed at the real CLI."""
    exe = _real_exe()
    scene = Path(os.environ.get("RRSIS_REAL_SCENE", ""))
    expression = os.environ.get("RRSIS_REAL_EXPRESSION", "")
    if not scene.is_file() or not expression:
        raise Skip("no generated scene (RRSIS_REAL_SCENE / RRSIS_REAL_EXPRESSION)")
    os.environ["RRSIS_GEO_EXE"] = exe
    return scene, expression


def check_real_end_to_end(workdir: Path) -> str:
    """processing.run with the real CLI + demo model on a generated scene → valid layer."""
    scene, expression = _real_scene()
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    start_qgis()
    fb = recording_feedback()
    t0 = time.monotonic()
    params = {"INPUT": str(scene), "EXPRESSION": expression, "DEVICE": 1,
              "OUTPUT": str(workdir / "found.gpkg"), "PROB_RASTER": str(workdir / "prob.tif")}
    if os.environ.get("RRSIS_REAL_WEIGHTS"):  # else WEIGHTS empty: the CLI's demo model
        params["WEIGHTS"] = os.environ["RRSIS_REAL_WEIGHTS"]
    res, err = run_alg(params, fb)
    dt = time.monotonic() - t0
    assert err is None, f"{err}\n" + "\n".join(fb.console[-20:])
    lyr = QgsVectorLayer(res["OUTPUT"], "found", "ogr")
    assert lyr.isValid(), "output does not load as a vector layer"
    assert lyr.name() == "found" and lyr.dataProvider().subLayers()
    assert "referred_objects" in lyr.dataProvider().subLayers()[0], lyr.dataProvider().subLayers()
    rl = QgsRasterLayer(str(scene), "scene")
    assert lyr.crs() == rl.crs(), (lyr.crs().authid(), rl.crs().authid())
    names = [f.name() for f in lyr.fields()]
    for n in ("expression", "score", "area_m2", "rank"):
        assert n in names, names
    n = lyr.featureCount()
    assert res["OBJECTS"] == n, (res, n)
    if n:
        f = next(lyr.getFeatures())
        assert f["expression"] == expression and 0.0 <= f["score"] <= 1.0, f.attributes()
        assert lyr.extent().intersects(rl.extent()), "objects lie outside the raster"
    pr = QgsRasterLayer(res["PROB_RASTER"], "prob")
    assert pr.isValid() and pr.crs() == rl.crs(), "probability raster invalid"
    p = fb.progress
    assert p and p == sorted(p) and p[-1] == 100.0, p
    return f"{n} object(s) in {dt:.1f} s; {len(p)} progress updates; {fb.commands[0]}"


def check_real_polygon_region(workdir: Path) -> str:
    """The real CLI with a triangle region from a polygon layer: every object lies in the
    triangle (the mask reached the CLI, not its extent) and the temporary region is gone."""
    scene, expression = _real_scene()
    from qgis.core import (QgsFeature, QgsGeometry, QgsProcessingUtils, QgsProject,
                           QgsRasterLayer, QgsVectorLayer)

    start_qgis()
    rl = QgsRasterLayer(str(scene), "scene")
    e = rl.extent()
    tri = QgsGeometry.fromWkt(
        f"POLYGON (({e.xMinimum()} {e.yMaximum()}, {e.xMaximum()} {e.yMinimum()}, "
        f"{e.xMinimum()} {e.yMinimum()}, {e.xMinimum()} {e.yMaximum()}))")
    mask = QgsVectorLayer(f"Polygon?crs={rl.crs().authid()}", "region", "memory")
    feat = QgsFeature()
    feat.setGeometry(tri)
    mask.dataProvider().addFeatures([feat])
    QgsProject.instance().addMapLayer(mask)
    fb = recording_feedback()
    params = {"INPUT": str(scene), "EXPRESSION": expression, "DEVICE": 1, "MODE": 1,
              "MIN_SCORE": 0.0, "THRESHOLD": 0.3, "MASK": mask.id(),
              "OUTPUT": str(workdir / "found.gpkg")}
    if os.environ.get("RRSIS_REAL_WEIGHTS"):
        params["WEIGHTS"] = os.environ["RRSIS_REAL_WEIGHTS"]
    res, err = run_alg(params, fb)
    assert err is None, f"{err}\n" + "\n".join(fb.console[-20:])
    lyr = QgsVectorLayer(res["OUTPUT"], "found", "ogr")
    assert lyr.isValid()
    n = 0
    for f in lyr.getFeatures():
        n += 1
        outside = f.geometry().difference(tri).area()
        assert outside < 1e-6 * max(f.geometry().area(), 1.0), (outside, f.attributes())
    roi = fb.commands[0].split("--roi ")[1].split()[0].strip("'\"")
    assert roi.endswith(".gpkg") and not os.path.exists(roi), roi
    assert os.path.dirname(roi) == QgsProcessingUtils.tempFolder(), roi
    return f"{n} object(s), all inside the triangle; --roi {roi}"


def check_real_cancel(workdir: Path) -> str:
    """Cancel the real CLI mid-run: stopped within 2 s, no output or scratch files left."""
    exe = _real_exe()
    scene = Path(os.environ.get("RRSIS_REAL_SCENE", ""))
    if not scene.is_file():
        raise Skip("no generated scene (RRSIS_REAL_SCENE)")
    os.environ["RRSIS_GEO_EXE"] = exe
    start_qgis()
    fb = recording_feedback()
    state: dict = {}

    def on_progress(value: float) -> None:
        # 15 % = "open" and "normalize" done: the tiles stage (scratch folder on disk) began
        if value >= 15 and "t" not in state:
            state["t"] = time.monotonic()
            state["at_cancel"] = sorted(p.name for p in workdir.iterdir())
            fb.cancel()

    fb.progressChanged.connect(on_progress)
    params = {"INPUT": str(scene), "EXPRESSION": "the building", "DEVICE": 1,
              "OUTPUT": str(workdir / "out.gpkg")}
    if os.environ.get("RRSIS_REAL_WEIGHTS"):
        params["WEIGHTS"] = os.environ["RRSIS_REAL_WEIGHTS"]
    res, err = run_alg(params, fb)
    assert "t" in state, f"no progress before the run ended: {err}"
    t_stop = time.monotonic() - state["t"]
    assert res is None and "Cancelled" in (err or ""), err
    assert t_stop < 2.0, f"stopped {t_stop:.2f} s after cancel"
    assert_clean(workdir)
    leftovers = [p.name for p in workdir.iterdir() if "rrsis-work" in p.name or "tmp" in p.name]
    assert not leftovers, leftovers
    return f"stopped {t_stop:.2f} s after cancel; on disk at cancel: {state['at_cancel']}"


def check_real_bad_raster(workdir: Path) -> str:
    """The real CLI on a raster it cannot use (georeferenced by GCPs only): exit 3, shown as
    a clear message."""
    exe = _real_exe()
    os.environ["RRSIS_GEO_EXE"] = exe
    raster = make_raster(workdir / "gcps.tif", gcps_only=True)
    start_qgis()
    fb = recording_feedback()
    res, err = run_alg(base_params(workdir, raster), fb)
    text = f"{err}\n{error_text(fb)}"
    assert res is None
    assert "cannot be used (exit code 3)" in text, text
    assert "Traceback" not in text, text
    assert_clean(workdir)
    return text.strip().splitlines()[0]


def check_params_v2(workdir: Path) -> str:
    """Band pickers → --bands R,G,B; class check and precision; a polygon layer as the region
    (the polygon itself, in the raster's CRS, in a temporary GeoPackage); the output format
    follows the file extension."""
    raster = make_raster(workdir / "scene.tif")
    os.environ["RRSIS_GEO_EXE"] = str(fake_exe(workdir))
    os.environ["RRSIS_FAKE_ARGV_LOG"] = str(workdir / "argv.json")
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature,
                           QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer)

    start_qgis()

    def argv_of(source=raster, **extra):
        if (workdir / "argv.json").exists():
            os.remove(workdir / "argv.json")
        res, err = run_alg(base_params(workdir, source, **extra))
        assert err is None, err
        return json.loads((workdir / "argv.json").read_text())["argv"], res

    argv, _ = argv_of(RED_BAND=3, GREEN_BAND=2, BLUE_BAND=1, CLASS_CHECK=False, PRECISION=1)
    assert argv[argv.index("--bands") + 1] == "3,2,1", argv
    assert "--no-class-check" in argv and argv[argv.index("--precision") + 1] == "fp32", argv
    argv, _ = argv_of(OUTPUT=str(workdir / "o2.gpkg"))
    assert "--bands" not in argv and "--no-class-check" not in argv, argv
    res, err = run_alg(base_params(workdir, raster, RED_BAND=3, OUTPUT=str(workdir / "o3.gpkg")))
    assert res is None and "all three bands" in err, err

    # a triangle (EPSG:4326) over the raster's top-left quarter → --roi a GeoPackage holding
    # that triangle in the raster's CRS (UTM): the polygon itself, not its extent
    utm, wgs = QgsCoordinateReferenceSystem("EPSG:32633"), QgsCoordinateReferenceSystem("EPSG:4326")
    tri_utm = QgsGeometry.fromWkt("POLYGON ((500000 4000000, 500016 4000000, "
                                  "500000 3999984, 500000 4000000))")
    tr = QgsCoordinateTransform(utm, wgs, QgsProject.instance())
    poly = QgsGeometry(tri_utm)
    poly.transform(tr)
    mask = QgsVectorLayer("Polygon?crs=EPSG:4326", "region", "memory")
    feat = QgsFeature()
    feat.setGeometry(poly)
    mask.dataProvider().addFeatures([feat])
    QgsProject.instance().addMapLayer(mask)

    def roi_of(argv):
        roi = argv[argv.index("--roi") + 1]
        content = json.loads((workdir / "argv.json").read_text())["roi_file"]
        assert roi.endswith(".gpkg") and content, (roi, content)
        assert not os.path.exists(roi), roi  # the temporary region is removed after the run
        crs = QgsCoordinateReferenceSystem.fromWkt(content["crs"])
        assert crs.authid() == "EPSG:32633", content["crs"]
        return QgsGeometry.fromWkt(content["wkt"])

    argv, _ = argv_of(MASK=mask.id(), OUTPUT=str(workdir / "o4.gpkg"))
    got = roi_of(argv)
    assert abs(got.area() - 128.0) < 0.5, got.asWkt()  # the triangle, not its 256 m² box
    assert got.symDifference(tri_utm).area() < 0.5, got.asWkt()
    # with an extent too: the polygon within the extent
    extent = "500008,500030,3999990,4000010 [EPSG:32633]"
    argv, _ = argv_of(MASK=mask.id(), EXTENT=extent, OUTPUT=str(workdir / "o5.gpkg"))
    got = roi_of(argv)
    want = tri_utm.intersection(QgsGeometry.fromRect(
        QgsRectangle(500008, 3999990, 500030, 4000010)))
    assert got.symDifference(want).area() < 0.1, got.asWkt()
    box = got.boundingBox()
    # cut at x = 500008, where the hypotenuse is at y = 3999992 (not the extent's 3999990)
    assert abs(box.xMinimum() - 500008) < 0.01 and abs(box.yMinimum() - 3999992) < 0.01, box
    # an extent alone stays bounds
    argv, _ = argv_of(EXTENT=extent, OUTPUT=str(workdir / "o6.gpkg"))
    assert [round(float(v)) for v in argv[argv.index("--roi") + 1].split(",")] == \
        [500008, 3999990, 500030, 4000010], argv

    # a pixel size reaches the CLI for a raster without a CRS only (a CRS gives its own)
    argv, _ = argv_of(PIXEL_SIZE=0.1, OUTPUT=str(workdir / "o7.gpkg"))
    assert "--pixel-size" not in argv, argv
    plain = make_raster(workdir / "plain.tif", epsg=None)
    argv, _ = argv_of(plain, PIXEL_SIZE=0.1, OUTPUT=str(workdir / "o8.gpkg"))
    assert argv[argv.index("--pixel-size") + 1] == "0.1", argv

    # the output's extension chooses the format: a Shapefile path reaches the CLI as it is
    argv, res = argv_of(OUTPUT=str(workdir / "found.shp"))
    assert argv[argv.index("-o") + 1] == str(workdir / "found.shp"), argv
    assert res["OUTPUT"] == str(workdir / "found.shp"), res
    return f"bands, class check, precision, polygon region --roi, .shp: {argv}"

CHECKS = {name[len("check_"):]: fn for name, fn in globals().items()
          if name.startswith("check_") and callable(fn)}


def main() -> None:
    name, workdir = sys.argv[1], Path(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    code, detail = 0, ""
    try:
        detail = CHECKS[name](workdir) or ""
    except Skip as exc:
        code, detail = SKIP, str(exc)
    except BaseException:  # report everything, including assertion failures, as one result
        code, detail = 1, traceback.format_exc()
    sys.stdout.flush()
    print("CHECK-RESULT " + json.dumps({"check": name, "ok": code == 0, "code": code,
                                        "detail": detail}), flush=True)
    sys.stderr.flush()
    os._exit(code)  # exitQgis() segfaults at interpreter exit on QGIS 3.22


if __name__ == "__main__":
    main()
