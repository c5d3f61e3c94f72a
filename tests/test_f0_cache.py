"""F0 targets at the model frame rate (cached by audio hash + settings) and the mirrored pose."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_tiny_dataset

from isdrama.data.f0_cache import F0Cache, f0_at_frames
from isdrama.data.mrsdrama import load_dataset
from isdrama.inference.drama_eval import mirror_pose


def test_f0_at_frames_interpolates_voiced_frames_and_takes_the_nearest_voicing():
    times = np.array([0.005, 0.019, 0.025, 0.035])
    f0 = np.array([100.0, 200.0, 0.0, 400.0])
    voiced = f0 > 0
    out = f0_at_frames(times, f0, voiced, n_frames=3, frame_rate=75.0)  # centres 6.7, 20, 33.3 ms
    assert out[1].tolist() == [1.0, 1.0, 1.0]  # nearest tracker frames: 0.005, 0.019, 0.035 (all voiced)
    expected0 = np.interp(1 / 150, times[voiced], np.log(f0[voiced]))
    assert out[0, 0] == pytest.approx(expected0, rel=1e-6)
    assert f0_at_frames(times, np.zeros(4), np.zeros(4, bool), 3, 75.0).sum() == 0


def test_f0_cache_tracks_both_ears_of_a_tone_and_reuses_the_entry(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=1, lines_per_drama=1)
    line = load_dataset(root).lines[0]  # a 200 Hz tone in both ears
    cache = F0Cache(root, {"tracker": "praat"}, 75.0)
    n = 30
    f0 = cache.load(line, n)
    assert f0.shape == (2, 2, n)
    voiced = f0[:, 1] > 0.5
    assert voiced[:, 5:-5].all()
    np.testing.assert_allclose(np.exp(f0[:, 0][voiced]), 200.0, rtol=0.02)
    path = cache.path_for(line)
    assert path.is_file() and path.parent.parent.name == cache.key
    mtime = path.stat().st_mtime_ns
    assert np.array_equal(cache.load(line, n - 4), f0[..., : n - 4]) and path.stat().st_mtime_ns == mtime
    other = F0Cache(root, {"tracker": "praat", "f0_max": 300.0}, 75.0)
    assert other.key != cache.key


def test_f0_cache_names_a_corrupt_entry(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=1, lines_per_drama=1)
    line = load_dataset(root).lines[0]
    cache = F0Cache(root, {"tracker": "praat"}, 75.0)
    path = cache.path_for(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not numpy")
    with pytest.raises(Exception, match="delete it to recompute"):
        cache.load(line, 10)


def test_f0_cache_rejects_mono_audio(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=1, lines_per_drama=1)
    line = load_dataset(root).lines[0]
    sf.write(line.wav_path, np.zeros(4800, np.float32), 48000)
    with pytest.raises(Exception, match="channel"):
        F0Cache(root, {"tracker": "praat"}, 75.0).load(line, 10)


def test_mirror_pose_flips_the_side_and_swaps_the_ears():
    pose = torch.tensor([[-2.0, 1.0, 0.5, 0.9, 0.1, 0.2, 0.3, 0.4, -0.6]], dtype=torch.float64)
    m = mirror_pose(pose)
    assert m.tolist() == [[2.0, 1.0, 0.5, 0.9, 0.1, -0.2, -0.3, -0.6, 0.4]]
    assert torch.equal(mirror_pose(m), pose)
