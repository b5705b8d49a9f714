"""Fixtures shared by several test modules.

Helpers that tests call directly live in modules of their own: ``tests/rasters.py`` (the one
GeoTIFF writer, test scenes, grids), ``tests/standin.py`` (stand-in segmenters and
``run_pipeline``), ``tests/standin_cli.py`` (stand-in weights files for CLI subprocesses).
"""

from __future__ import annotations

import pytest


@pytest.fixture
def seg():
    """A loaded segmenter around the stand-in red-pixel model (input 64 px, CPU)."""
    from rrsis_geo.inference.segmenter import Segmenter
    from tests.standin import RedSegmenter

    return Segmenter(model=RedSegmenter(input_size=64), device="cpu")


@pytest.fixture
def cli_standin(monkeypatch, tmp_path):
    """A click test runner whose ``rrsis-geo`` loads the stand-in red-pixel model."""
    from click.testing import CliRunner

    import rrsis_geo.defaults as defaults
    import rrsis_geo.model as model_pkg
    from tests.standin import RedSegmenter

    weights = tmp_path / "standin.safetensors"
    weights.write_bytes(b"x")
    monkeypatch.setattr(defaults, "resolve_weights", lambda p: weights)
    monkeypatch.setattr(model_pkg, "load_fianet", lambda p, **k: RedSegmenter(64), raising=False)
    return CliRunner()
