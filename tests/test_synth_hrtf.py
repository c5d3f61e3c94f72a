"""SOFA loading: conventions, interpolation, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isdrama.data.schema import DataError
from isdrama.data.synth.hrtf import DEFAULT_SOFA, HRTFConfig, cached_hrtf, load_sofa

needs_kemar = pytest.mark.skipif(not DEFAULT_SOFA.is_file(), reason=f"{DEFAULT_SOFA} not installed")


def test_missing_sofa_file_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere" / "kemar.sofa"
    with pytest.raises(DataError, match="kemar.sofa") as err:
        load_sofa(HRTFConfig(sofa_path=str(missing)))
    assert str(missing) in str(err.value) and "not found" in str(err.value)


def test_corrupt_sofa_file_is_named(tmp_path: Path):
    bad = tmp_path / "broken.sofa"
    bad.write_bytes(b"this is not a netCDF-4 file" * 10)
    with pytest.raises(DataError) as err:
        load_sofa(HRTFConfig(sofa_path=str(bad)))
    assert str(bad) in str(err.value) and "SOFA" in str(err.value)


@pytest.fixture(scope="module")
def kemar():
    if not DEFAULT_SOFA.is_file():
        pytest.skip(f"{DEFAULT_SOFA} not installed")
    return cached_hrtf(HRTFConfig())


@needs_kemar
def test_kemar_shape_and_rate(kemar):
    assert kemar.directions.shape == (710, 3)
    assert kemar.hrirs.shape == (710, 2, HRTFConfig().taps)
    assert kemar.sample_rate == 48_000
    assert kemar.measured_distance == pytest.approx(1.4)
    assert np.allclose(np.linalg.norm(kemar.directions, axis=1), 1.0)


@needs_kemar
def test_left_is_positive_sofa_azimuth(kemar):
    """The measured direction nearest x = -1 (left) is louder in the left ear, and vice versa."""
    energy = np.sum(kemar.hrirs**2, axis=-1)  # (M, 2)
    left = int(np.argmax(kemar.directions @ np.array([-1.0, 0.0, 0.0])))
    right = int(np.argmax(kemar.directions @ np.array([1.0, 0.0, 0.0])))
    assert 10 * np.log10(energy[left, 0] / energy[left, 1]) > 6
    assert 10 * np.log10(energy[right, 1] / energy[right, 0]) > 6


@needs_kemar
def test_interpolation_weights(kemar):
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((500, 3))
    idx, w = kemar.weights(dirs)
    assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1.0)
    # the weighted vertices point back along the query direction (the triangle contains it)
    back = np.einsum("nj,njc->nc", w, kemar.directions[idx])
    back /= np.linalg.norm(back, axis=1, keepdims=True)
    assert np.allclose(back, dirs / np.linalg.norm(dirs, axis=1, keepdims=True), atol=1e-9)
    # at a measured direction the interpolated HRIR is the measured one
    assert np.allclose(kemar.interpolate(kemar.directions[[5, 300]]), kemar.hrirs[[5, 300]], atol=1e-9)


@needs_kemar
def test_interpolated_filters_vary_smoothly(kemar):
    """0.1-degree steps change the filter by a few percent at most: no jumps between triangles
    (switching to the nearest measured filter instead jumps by more than 100%)."""
    az = np.radians(np.linspace(0, 360, 3601))
    dirs = np.stack([np.sin(az), np.cos(az), np.zeros_like(az)], axis=-1)

    def max_step(h: np.ndarray) -> float:
        return float((np.linalg.norm(np.diff(h, axis=0), axis=(1, 2)) / np.linalg.norm(h[1:], axis=(1, 2))).max())

    assert max_step(kemar.interpolate(dirs)) < 0.08
    assert max_step(kemar.hrirs[np.argmax(dirs @ kemar.directions.T, axis=1)]) > 0.5


@needs_kemar
def test_onsets_aligned_and_itd_removed(kemar):
    """Every filter pair starts at the pre-delay; no interaural delay is left in the filters."""
    cfg = HRTFConfig()
    peak = np.abs(kemar.hrirs).max(axis=(1, 2), keepdims=True)
    first = np.argmax((np.abs(kemar.hrirs) >= peak * 10 ** (cfg.onset_threshold_db / 20)).any(axis=1), axis=1)
    assert np.all(first == cfg.pre_delay)
    lateral = int(np.argmax(kemar.directions @ np.array([-1.0, 0.0, 0.0])))
    left, right = kemar.hrirs[lateral]
    cc = np.correlate(right, left, mode="full")
    assert abs(int(np.argmax(cc)) - (len(left) - 1)) <= 1
