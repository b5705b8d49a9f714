"""Realism of generated chips (``--realism``): texture bank, sensor effects, invariants."""

from __future__ import annotations

import json
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rrsis_geo.data.synth import generate_chip, generate_scene
from rrsis_geo.data.synth import sensor as synth_sensor
from rrsis_geo.data.synth import textures as synth_textures
from rrsis_geo.data.synth.look import REALISM, names_colour
from rrsis_geo.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
LEVELS = [r for r in REALISM if r != "none"]


def test_bank_loads_from_package():
    bank = synth_textures.load_bank()
    for name in ("ground", "grass", "canopy", "crown", "roof", "asphalt", "water"):
        a = bank[name]
        assert a.ndim == 4 and a.shape[-1] == 3 and len(a) >= 20, name
        assert 20 < float(a.mean()) < 235, name  # real pixels, neither blank nor saturated
    ref = resources.files("rrsis_geo.data.synth").joinpath("bank", "bank.npz")
    with resources.as_file(ref) as path:
        size = path.stat().st_size
        rel = path.resolve().relative_to((ROOT / "rrsis_geo").resolve()).as_posix()
    assert size < 2_500_000
    # the wheel carries it: a package-data pattern of pyproject.toml matches the file
    pats = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["rrsis_geo"]
    assert any(fnmatch(rel, p) for p in pats), (rel, pats)


@pytest.mark.parametrize("realism", LEVELS)
def test_realism_changes_pixels_never_labels(realism):
    changed = 0
    for seed in range(12):
        etype = "absent" if seed % 4 == 3 else None
        plain = generate_chip(seed, 160, etype=etype)
        real = generate_chip(seed, 160, etype=etype, realism=realism)
        assert real.expression == plain.expression and real.type == plain.type
        assert np.array_equal(real.mask, plain.mask)
        assert np.array_equal(real.category_union_mask, plain.category_union_mask)
        assert real.image.shape == plain.image.shape and real.image.dtype == np.uint8
        changed += not np.array_equal(real.image, plain.image)
    assert changed >= 10


def test_deterministic_per_seed():
    a = generate_chip(7, 192, realism="all")
    b = generate_chip(7, 192, realism="all")
    c = generate_chip(8, 192, realism="all")
    assert np.array_equal(a.image, b.image) and a.details == b.details
    assert not np.array_equal(a.image, c.image)


def _colour_ok(colour: str, rgb: np.ndarray, chip_lum: float) -> bool:
    r, g, b = (float(v) for v in rgb)
    return {
        # bright, and brighter than the chip as a whole (a car's mean includes its windows)
        "white": min(r, g, b) >= 130 and (r + g + b) / 3 > chip_lum,
        "black": max(r, g, b) <= 95,
        "red": r > g + 30 and r > b + 30,
        "blue": b > r + 25,
        "yellow": r > b + 50 and g > b + 40,
        "green": g > r + 10 and g > b,
        "orange": r > g + 20 and g > b,
        "brown": r > b + 20,
        "grey": max(r, g, b) - min(r, g, b) < 35,
    }[colour]


def test_named_colours_stay_true():
    """Over many colour sentences, the referent's mean colour still reads as the word says."""
    seen: dict[str, int] = {}
    for seed in range(400):
        plain = generate_chip(seed, 160, etype="attribute")
        colour = plain.details.get("colour")
        if colour is None:
            continue
        chip = generate_chip(seed, 160, etype="attribute", realism="all")
        assert chip.details["sensor"].get("bands") != "pan"  # colour chips stay in colour
        mean = chip.image[chip.mask].reshape(-1, 3).mean(0)
        assert _colour_ok(colour, mean, float(chip.image.mean())), (
            seed, chip.expression, mean, chip.details["sensor"])
        seen[colour] = seen.get(colour, 0) + 1
        if len(seen) >= 6 and min(seen.values()) >= 3:
            break
    assert {"white", "red", "blue"} <= set(seen), seen


def test_panchromatic_only_without_colour_words():
    pans = 0
    for seed in range(120):
        chip = generate_chip(seed, 128, etype="category", realism="sensor")
        if chip.details["sensor"].get("bands") == "pan":
            pans += 1
            assert not names_colour(chip.expression)
            im = chip.image.astype(int)
            assert np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1],
                                                                              im[..., 2])
    assert pans >= 5


def test_sensor_effects_bounded_and_nodata_free():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 128, np.uint8)
    img[:32] = (236, 236, 230)
    kinds = set()
    for _ in range(40):
        out, info = synth_sensor.apply_sensor(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8 and out.min() >= 1
        assert float(out[4:28, 4:60].mean()) > float(out[36:60, 4:60].mean())  # white > grey
        kinds |= set(info)
    assert {"haze", "exposure", "white_balance", "blur", "noise", "jpeg"} <= kinds


def test_nir_band_vegetation_bright_water_dark():
    scene = generate_scene(3, 512, nodata_margin=False, n_targets=2, n_absent=0)
    nir = synth_sensor.nir_band(scene.image, scene.label, scene.categories)
    red = scene.image[..., 0].astype(float)
    for cat, brighter in (("tree", True), ("pond", False)):
        ids = [i for i, c in scene.categories.items() if c == cat]
        sel = np.isin(scene.label, ids)
        if sel.any():
            assert (nir[sel].mean() > red[sel].mean()) == brighter, cat


def test_scene_realism_keeps_targets():
    a = generate_scene(4, 512, n_targets=2, n_absent=1)
    b = generate_scene(4, 512, n_targets=2, n_absent=1, realism="all")
    assert [t.expression for t in a.targets] == [t.expression for t in b.targets]
    assert np.array_equal(a.label, b.label) and np.array_equal(a.valid, b.valid)
    assert not np.array_equal(a.image, b.image)
    assert (b.image[~b.valid] == 0).all() and (b.image[b.valid] > 0).all()


def test_cli_chips_realism(tmp_path):
    from rrsis_geo.cli.main import cli

    out = tmp_path / "r"
    res = CliRunner().invoke(cli, ["synth", "chips", str(out), "--count", "3", "--size", "128",
                                   "--seed", "5", "--realism", "all"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["realism"] for r in recs] == ["all"] * 3
    res = CliRunner().invoke(cli, ["synth", "chips", str(tmp_path / "x"), "--realism", "max"])
    assert res.exit_code == 2
    assert "--realism" in CliRunner().invoke(cli, ["synth", "chips", "--help"]).output
    with pytest.raises(UsageError):
        generate_chip(1, 128, realism="cartoon")


@pytest.mark.parametrize("bands,count", [("rgbn", 4), ("pan", 1)])
def test_cli_scene_bands(tmp_path, bands, count):
    import rasterio

    from rrsis_geo.cli.main import cli

    out = tmp_path / "s.tif"
    res = CliRunner().invoke(cli, ["synth", "scene", str(out), "--size", "512", "--seed", "2",
                                   "--gsd", "1.0", "--bands", bands, "--realism", "sensor"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as ds:
        assert ds.count == count and ds.nodata == 0 and ds.res == (1.0, 1.0)
        a = ds.read()
    assert a.max() > 1 and (a > 0).any(axis=0).mean() > 0.5
