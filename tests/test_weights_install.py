"""Weights that install: the demo model inside the wheel, and remote ``--weights`` (URL, hf://)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import site
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from rrsis_geo import defaults
from rrsis_geo.cli.main import cli
from rrsis_geo.errors import WeightsError
from rrsis_geo.model.objclass import sibling_path

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "sample_data" / "demo_scene.tif"
CHECKOUT_MODEL = REPO / "sample_data" / "demo_model" / "fianet_tiny.safetensors"
# one 128 m x 128 m corner of the demo scene (EPSG:32633): a few tiles, so the run is short
ROI = "579990,5046262,580118,5046390"

needs_model = pytest.mark.skipif(not CHECKOUT_MODEL.is_file(),
                                 reason="the demo model is not in sample_data/demo_model/")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RRSIS_GEO_WEIGHTS", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


@needs_model
def test_package_weights_point_at_the_checkout_model():
    """In a checkout the package-data files are the sample_data/ model (one copy in git)."""
    assert defaults.PACKAGE_WEIGHTS.is_file()
    assert defaults.PACKAGE_WEIGHTS.resolve() == CHECKOUT_MODEL.resolve()
    assert defaults.PACKAGE_WEIGHTS.with_suffix(".json").resolve() == \
        CHECKOUT_MODEL.with_suffix(".json").resolve()
    assert sibling_path(defaults.PACKAGE_WEIGHTS).resolve() == \
        sibling_path(CHECKOUT_MODEL).resolve()  # the class check's object classifier
    assert defaults.resolve_weights(None) == defaults.DEMO_WEIGHTS


@pytest.mark.slow
@needs_model
def test_wheel_carries_the_demo_model_and_segments(tmp_path):
    """Build the wheel, install it alone into a fresh venv (dependencies reached through a
    plain path entry, so the shared venv's editable rrsis_geo is *not* importable), and run
    ``rrsis-geo segment`` on the demo scene with the default weights."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(wheels)],
                   check=True, cwd=tmp_path, env=_clean_env())
    (wheel,) = wheels.glob("rrsis_geo-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    vsite = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                 "['purelib'])"], check=True, capture_output=True,
                                text=True).stdout.strip())
    # a bare path line: the shared site-packages' own .pth files (the editable finder) are not run
    shared = [p for p in site.getsitepackages() if Path(p, "torch").is_dir()]
    assert shared, "torch not found in this interpreter's site-packages"
    (vsite / "zz_shared_deps.pth").write_text("\n".join(shared) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps",
                    "-q", str(wheel)], check=True, cwd=tmp_path, env=_clean_env())

    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(RRSIS_GEO_CACHE=str(tmp_path / "cache"))
    probe = subprocess.run(
        [str(vpy), "-c", "import rrsis_geo, rrsis_geo.defaults as d; "
         "print(rrsis_geo.__file__); print(d.resolve_weights(None))"],
        check=True, capture_output=True, text=True, cwd=work, env=env).stdout.split("\n")
    pkg_file, weights = Path(probe[0]), Path(probe[1])
    assert pkg_file.is_relative_to(venv), pkg_file  # the wheel's copy, not the checkout
    assert weights.is_relative_to(venv) and not weights.is_symlink(), weights
    assert _sha(weights) == _sha(CHECKOUT_MODEL)  # the wheel holds the current model
    assert _sha(weights.with_suffix(".json")) == _sha(CHECKOUT_MODEL.with_suffix(".json"))
    assert _sha(sibling_path(weights)) == _sha(sibling_path(CHECKOUT_MODEL))

    out = work / "found.gpkg"
    run = subprocess.run(
        [str(venv / "bin" / "rrsis-geo"), "segment", str(SCENE), "-e", "the building",
         "-o", str(out), "--roi", ROI, "--no-class-check", "--progress", "none"],
        capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    import pyogrio

    info = pyogrio.read_info(out)
    assert info["crs"].endswith("32633")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def loopback(tmp_path):
    """A loopback HTTP server over ``tmp_path/www``; yields (root folder, base URL, hits list)."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(_Quiet):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _publish(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        (folder / f"fianet_tiny{suffix}").symlink_to(CHECKOUT_MODEL.with_suffix(suffix))


@needs_model
def test_url_weights_download_once_then_segment_from_cache(loopback, tmp_path, monkeypatch):
    root, base, hits = loopback
    _publish(root / "models")
    monkeypatch.setenv("RRSIS_GEO_CACHE", str(tmp_path / "cache"))
    url = f"{base}/models/fianet_tiny.safetensors"
    local = defaults.resolve_weights(url)
    assert local.is_relative_to(tmp_path / "cache")
    assert _sha(local) == _sha(CHECKOUT_MODEL)
    assert _sha(local.with_suffix(".json")) == _sha(CHECKOUT_MODEL.with_suffix(".json"))
    assert sorted(hits) == ["/models/fianet_tiny.json", "/models/fianet_tiny.safetensors"]
    assert [p.name for p in local.parent.iterdir() if p.name.startswith(".")] == []  # no temps

    out = tmp_path / "found.gpkg"
    r = CliRunner().invoke(cli, ["segment", str(SCENE), "-e", "the building", "-o", str(out),
                                 "--roi", ROI, "--no-class-check", "--progress", "none",
                                 "--weights", url])
    assert r.exit_code == 0, r.output
    assert out.is_file()
    assert len(hits) == 2  # the second use read the cache, not the server


@needs_model
def test_hf_weights_map_to_the_hub_resolve_url(loopback, tmp_path, monkeypatch):
    root, base, hits = loopback
    _publish(root / "someone" / "rrsis-demo" / "resolve" / "v1" / "models")
    monkeypatch.setenv("RRSIS_GEO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", base)  # the Hub's mirror variable, here our server
    local = defaults.resolve_weights("hf://someone/rrsis-demo@v1/models/fianet_tiny.safetensors")
    assert _sha(local) == _sha(CHECKOUT_MODEL)
    assert "/someone/rrsis-demo/resolve/v1/models/fianet_tiny.safetensors" in hits
    with pytest.raises(WeightsError, match="hf://OWNER/REPO"):
        defaults.resolve_weights("hf://someone/fianet_tiny.safetensors")


def test_offline_url_is_one_line_exit_4(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on: the same as no network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RRSIS_GEO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "found.gpkg"
    r = CliRunner().invoke(cli, ["segment", str(SCENE), "-e", "the building", "-o", str(out),
                                 "--weights", f"http://127.0.0.1:{port}/m/fianet_tiny.safetensors"])
    assert r.exit_code == 4, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error: cannot download weights")
    assert "offline" in lines[0] and "--weights PATH" in lines[0]
    assert not out.exists()
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []


def test_http_error_is_reported(loopback, tmp_path, monkeypatch):
    _root, base, _hits = loopback
    monkeypatch.setenv("RRSIS_GEO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="HTTP 404"):
        defaults.resolve_weights(f"{base}/missing/fianet_tiny.safetensors")
