"""Broadband ILD, GCC-PHAT ITD, the lateral side of a pose, and the codec's interaural cue loss,
against values known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isdrama.codec.losses import InterauralCueLoss
from isdrama.metrics.interaural import broadband_ild_db, gcc_phat_itd, lateral_side

SR = 24_000


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def test_broadband_ild_is_the_energy_ratio_in_db():
    x = noise(SR)
    wav = np.stack([0.5 * x, 0.25 * x])
    assert broadband_ild_db(wav) == pytest.approx(20 * math.log10(2.0), abs=1e-9)
    with pytest.raises(ValueError, match=r"\(2, S\)"):
        broadband_ild_db(x)


@pytest.mark.parametrize("lag", [-12, -5, 0, 7])
def test_gcc_phat_finds_the_interaural_lag_and_its_sign(lag):
    x = noise(SR + 50)
    left = x[25 : 25 + SR]
    right = x[25 - lag : 25 - lag + SR]  # right[t] = left[t - lag]: the left ear leads when lag > 0
    itd = gcc_phat_itd(np.stack([left, right]), SR, max_itd_s=1e-3)
    assert itd == pytest.approx(lag / SR, abs=0.5 / SR)


def test_lateral_side_follows_x_with_a_median_plane_margin():
    pose = np.zeros((10, 9))
    pose[:, 1] = 1.0
    pose[:, 0] = -2.0  # x to the right: negative x = left
    assert lateral_side(pose) == 1
    pose[:, 0] = 2.0
    assert lateral_side(pose) == -1
    pose[:, 0] = math.tan(math.radians(20.0))  # 20 degrees off the median plane
    assert lateral_side(pose, margin_deg=22.5) is None
    assert lateral_side(pose, margin_deg=10.0) == -1


def test_interaural_cue_loss_measures_level_and_phase_changes():
    loss = InterauralCueLoss(SR, n_fft=512, hop_length=128, n_bands=16, floor_db=-40.0, phase_max_hz=4000.0)
    x = torch.from_numpy(noise(SR + 100)).float()
    ref = torch.stack([x[50 : 50 + SR], 0.5 * x[50 : 50 + SR]])[None]
    ild, phase = loss(ref, ref)
    assert float(ild) == 0.0 and float(phase) == 0.0
    louder_right = ref * torch.tensor([1.0, 2.0])[None, :, None]  # +6.02 dB on the right ear
    ild, phase = loss(louder_right, ref)
    assert float(ild) == pytest.approx(20 * math.log10(2.0), rel=1e-3)
    assert float(phase) < 1e-6  # a gain changes no phase
    both_delayed = torch.stack([x[40 : 40 + SR], 0.5 * x[40 : 40 + SR]])[None]  # the same delay in both ears
    _, phase = loss(both_delayed, ref)
    assert float(phase) < 0.05  # only the frame edges differ
    itd_changed = torch.stack([x[50 : 50 + SR], 0.5 * x[46 : 46 + SR]])[None]  # right ear 4 samples earlier
    ild, phase = loss(itd_changed, ref)
    assert float(phase) > 0.5 and float(ild) < 0.5
