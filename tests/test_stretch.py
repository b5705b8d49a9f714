"""Radiometric stretch choices (--stretch) keep colours and treat dtypes alike."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis_geo.errors import UsageError
from rrsis_geo.geo.radiometry import compute_normalizer
from tests.rasters import write_raster


def _write(path, arr):
    """Untiled, 1 m pixels, colour interpretation left to GDAL."""
    return write_raster(path, arr, res=1.0, tiled=False, gdal_colorinterp=True)


@pytest.fixture
def bluish(tmp_path):
    rng = np.random.default_rng(1)
    arr = np.empty((3, 64, 64), np.uint8)
    arr[0] = rng.integers(20, 60, (64, 64))  # little red
    arr[1] = rng.integers(60, 120, (64, 64))
    arr[2] = rng.integers(150, 230, (64, 64))  # much blue
    return arr, _write(tmp_path / "u8.tif", arr), _write(tmp_path / "u16.tif",
                                                         arr.astype(np.uint16) * 257)


def test_auto_is_identity_for_8bit(bluish):
    arr, p8, _ = bluish
    n = compute_normalizer(p8, (1, 2, 3), stretch="auto")
    assert n.method == "dtype"
    np.testing.assert_allclose(n.apply(arr), arr / 255.0, atol=1e-6)


def test_joint_keeps_colour_balance_per_band_does_not(bluish):
    arr, p8, _ = bluish
    joint = compute_normalizer(p8, (1, 2, 3), stretch="joint").apply(arr).mean(axis=(1, 2))
    per = compute_normalizer(p8, (1, 2, 3), stretch="per-band").apply(arr).mean(axis=(1, 2))
    assert joint[2] > joint[1] > joint[0] + 0.2  # still blue
    assert abs(per[2] - per[0]) < 0.1  # per-band stretch washes the hue out


def test_joint_treats_uint8_and_uint16_alike(bluish):
    arr, p8, p16 = bluish
    a = compute_normalizer(p8, (1, 2, 3), stretch="joint").apply(arr)
    b = compute_normalizer(p16, (1, 2, 3), stretch="joint").apply(arr.astype(np.uint16) * 257)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_auto_uses_joint_for_16bit(bluish):
    _, _, p16 = bluish
    assert compute_normalizer(p16, (1, 2, 3), stretch="auto").method == "joint-percentile"


def test_unknown_stretch_is_usage_error(bluish):
    with pytest.raises(UsageError):
        compute_normalizer(bluish[1], (1, 2, 3), stretch="log")
