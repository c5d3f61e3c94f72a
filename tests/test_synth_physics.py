"""Rendering physics of the synthetic generator, measured on the rendered audio only.

Interaural level/time differences by cross-correlation of the two channels, Doppler shift by the
spectral peak of a rendered tone, propagation delay by cross-correlation with the dry signal,
radial velocities by numerical differentiation. None of these reads renderer internals.
"""

from __future__ import annotations

import numpy as np
import pytest

from isdrama.data.schema import EAR_POSITIONS, POSE_FRAME_RATE
from isdrama.data.synth.hrtf import DEFAULT_SOFA, HRTFConfig, cached_hrtf
from isdrama.data.synth.render import RenderConfig, render_binaural
from isdrama.data.synth.trajectory import Trajectory, static_trajectory

pytestmark = pytest.mark.skipif(not DEFAULT_SOFA.is_file(), reason=f"{DEFAULT_SOFA} not installed (libmysofa1)")

SR = 48_000
C = 343.0
OMNI = RenderConfig(directivity=0.0)


@pytest.fixture(scope="module")
def hrtf():
    return cached_hrtf(HRTFConfig())


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def xcorr_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Lag (samples, sub-sample by parabolic fit) by which b trails a."""
    n = len(a) + len(b)
    cc = np.fft.irfft(np.conj(np.fft.rfft(a, n)) * np.fft.rfft(b, n), n)
    lags = np.arange(-max_lag, max_lag + 1)
    vals = cc[lags % n]
    k = int(np.argmax(vals))
    y0, y1, y2 = vals[max(k - 1, 0)], vals[k], vals[min(k + 1, len(vals) - 1)]
    frac = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if 0 < k < len(vals) - 1 else 0.0
    return float(lags[k] + frac)


def peak_frequency(x: np.ndarray) -> float:
    """Frequency (Hz) of the strongest spectral peak, zero-padded FFT + parabolic refinement."""
    n = 16 * len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x**2))


@pytest.mark.parametrize("side, x", [("left", -2.0), ("right", 2.0)])
def test_lateral_source_level_and_time_difference(hrtf, side, x):
    dry = noise(1.0)
    traj = static_trajectory(np.array([x, 0.0, 0.0]), 0.0, "standing", 1.0)
    left, right = render_binaural(dry, traj, hrtf, cfg=OMNI)
    near, far = (left, right) if side == "left" else (right, left)
    assert level_db(near) - level_db(far) > 6.0
    lag_ms = xcorr_lag(near, far, max_lag=SR // 500) / SR * 1000  # far ear trails the near ear
    assert 0.6 <= lag_ms <= 0.7, f"{side} source: interaural delay {lag_ms:.3f} ms"


def test_frontal_source_is_balanced(hrtf):
    left, right = render_binaural(
        noise(1.0), static_trajectory(np.array([0.0, 2.0, 0.0]), 0.0, "standing", 1.0), hrtf, cfg=OMNI
    )
    assert abs(level_db(left) - level_db(right)) < 1.0
    assert abs(xcorr_lag(left, right, SR // 500)) < 1.0


def straight_line(start: np.ndarray, velocity: np.ndarray, seconds: float) -> Trajectory:
    end = start + velocity * seconds
    yaw = 0.0
    return Trajectory(
        times=np.array([0.0, seconds]),
        positions=np.stack([start, end]),
        yaws=np.array([yaw, yaw]),
        posture="standing",
        speed_class="fast",
        speed=float(np.linalg.norm(velocity)),
    )


@pytest.mark.parametrize("v", [20.0, -20.0, 8.0])
def test_doppler_shift_of_a_moving_tone(hrtf, v):
    """A source approaching at v m/s (receding if v < 0) sounds at f c / (c - v)."""
    f, seconds = 1000.0, 2.0
    tone = 0.1 * np.sin(2 * np.pi * f * np.arange(int(seconds * SR)) / SR)
    start = np.array([0.0, 30.0, 0.0]) if v > 0 else np.array([0.0, 2.0, 0.0])
    traj = straight_line(start, np.array([0.0, -v, 0.0]), seconds)
    out = render_binaural(tone, traj, hrtf, cfg=OMNI)
    expected = f * C / (C - v)
    for ear in range(2):
        measured = peak_frequency(out[ear, SR // 2 : SR // 2 + SR])
        assert abs((measured - f) - (expected - f)) < 0.05 * abs(expected - f), (
            f"ear {ear}: {measured:.2f} Hz, expected {expected:.2f} Hz"
        )


def test_static_tone_is_not_shifted(hrtf):
    tone = 0.1 * np.sin(2 * np.pi * 1000.0 * np.arange(SR) / SR)
    out = render_binaural(tone, static_trajectory(np.array([1.0, 2.0, 0.3]), 0.0, "standing", 1.0), hrtf, cfg=OMNI)
    assert abs(peak_frequency(out[0, SR // 4 : 3 * SR // 4]) - 1000.0) < 0.5


def test_propagation_delay_matches_pose_distance(hrtf):
    """Distances in the pose file, divided by c, are the delays the audio carries."""
    dry = noise(1.0, seed=3)
    lags = {}
    for d in (1.0, 4.5):
        traj = static_trajectory(np.array([0.0, d, 0.0]), np.pi, "standing", 1.0)
        pose = traj.pose(int(POSE_FRAME_RATE))
        ear_dist = np.linalg.norm(pose[:, None, :3] - EAR_POSITIONS[None], axis=-1)  # (T, 2)
        out = render_binaural(dry, traj, hrtf, cfg=OMNI)
        for ear in range(2):
            lag = xcorr_lag(dry, out[ear], max_lag=SR // 20)
            expected = ear_dist[0, ear] / C * SR
            assert abs(lag - expected) < 0.25e-3 * SR, f"ear {ear} at {d} m: lag {lag:.1f}, expected {expected:.1f}"
            lags[(d, ear)] = lag
    for ear in range(2):  # the HRIR's own shape cancels in a difference of distances
        assert abs((lags[(4.5, ear)] - lags[(1.0, ear)]) - 3.5 / C * SR) < 1.0


def test_gain_falls_as_one_over_distance(hrtf):
    dry = noise(1.0, seed=4)
    levels = [
        level_db(
            render_binaural(dry, static_trajectory(np.array([0.0, d, 0.0]), np.pi, "standing", 1.0), hrtf, cfg=OMNI)[
                0, SR // 10 :
            ]
        )
        for d in (1.0, 2.0, 4.0)
    ]
    assert np.allclose(np.diff(levels), -20 * np.log10(2), atol=0.3)


def test_radial_velocity_columns_are_the_derivative_of_ear_distance():
    traj = straight_line(np.array([-3.0, 1.0, 0.4]), np.array([1.5, 0.8, 0.0]), 3.0)
    pose = traj.pose(int(3.0 * POSE_FRAME_RATE))
    dist = np.linalg.norm(pose[:, None, :3].astype(np.float64) - EAR_POSITIONS[None], axis=-1)
    numeric = np.gradient(dist, 1.0 / POSE_FRAME_RATE, axis=0)
    inner = slice(2, -2)
    assert np.allclose(pose[inner, 7:9], numeric[inner], atol=2e-3)
    assert pose[0, 7] < 0 < pose[-1, 7]  # first approaching the left ear, then receding


def test_moving_source_renders_without_clicks(hrtf):
    """A fast circular walk (filters change every block) adds no broadband energy to a tone."""
    seconds, f = 2.0, 500.0
    tone = 0.1 * np.sin(2 * np.pi * f * np.arange(int(seconds * SR)) / SR)
    angles = np.linspace(0, 2 * np.pi, 41)
    circle = Trajectory(
        times=np.linspace(0, seconds, 41),
        positions=np.stack([1.5 * np.sin(angles), 1.5 * np.cos(angles), 0 * angles], -1),
        yaws=np.zeros(41),
        posture="standing",
        speed_class="fast",
        speed=4.7,
    )
    out = render_binaural(tone, circle, hrtf, cfg=OMNI)[:, SR // 10 : -SR // 10]
    spec = np.abs(np.fft.rfft(out * np.hanning(out.shape[1]), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(out.shape[1], 1 / SR)
    high = spec[:, freqs > 4 * f].sum(axis=-1) / spec.sum(axis=-1)
    assert np.all(high < 1e-5), f"broadband energy ratio {high}"
