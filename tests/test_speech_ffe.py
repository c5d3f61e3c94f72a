"""FFE on tones of known pitch; expectations computed from the definitions, not the code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isdrama.metrics.speech import (
    FfeConfig,
    InvalidAudio,
    PitchConfig,
    PitchTrack,
    ffe,
    ffe_from_tracks,
    track_pitch,
)

SR = 16000


def tone(f0: float, seconds: float = 2.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def praat_frames(seconds: float, cfg: PitchConfig = PitchConfig()) -> int:
    """Praat's AC frame count: floor((duration - 3 periods of the floor) / hop) + 1."""
    return math.floor((seconds - 3.0 / cfg.f0_min) / cfg.hop_s + 1e-9) + 1


def test_praat_tracks_the_tone_frequency():
    tr = track_pitch(tone(200.0), PitchConfig())
    assert tr.f0.size == praat_frames(2.0)
    assert tr.voiced.all()
    assert np.allclose(tr.f0, 200.0, atol=0.5)
    assert np.allclose(np.diff(tr.times), 0.01)


def test_identical_tones_give_zero():
    r = ffe(tone(200.0), tone(200.0), SR)
    assert (r.ffe, r.gpe, r.vde) == (0.0, 0.0, 0.0)
    assert r.n_frames == praat_frames(2.0)


def test_200_vs_300_hz_every_voiced_frame_is_a_gross_error():
    r = ffe(tone(200.0), tone(300.0), SR)  # 50 % off > 20 %
    assert r.vde == 0.0
    assert r.gpe == 1.0
    assert r.ffe == 1.0


@pytest.mark.parametrize("f_gen, expected", [(230.0, 0.0), (170.0, 0.0), (250.0, 1.0), (150.0, 1.0)])
def test_twenty_percent_tolerance(f_gen, expected):
    # 230 and 170 Hz are 15 % off 200 Hz (fine), 250 and 150 Hz 25 % off (gross errors)
    assert ffe(tone(200.0), tone(f_gen), SR).ffe == pytest.approx(expected)


def test_tone_vs_silence_is_all_voicing_errors():
    r = ffe(tone(200.0), np.zeros(2 * SR, np.float32), SR)
    assert r.vde == 1.0 and r.ffe == 1.0
    assert r.n_voiced_both == 0 and math.isnan(r.gpe)  # nothing to measure: NaN, not a number made up
    assert ffe(np.zeros(2 * SR), tone(200.0), SR).ffe == 1.0


def test_half_silent_matches_frame_times():
    ref = tone(200.0)
    gen = ref.copy()
    gen[SR:] = 0.0  # second half silent
    r = ffe(ref, gen, SR)
    # frame times as Praat places them: centred in the signal with a 10 ms hop
    n = praat_frames(2.0)
    t = (2.0 - (n - 1) * 0.01) / 2 + 0.01 * np.arange(n)
    expected = np.count_nonzero(t > 1.0) / n
    assert r.gpe == 0.0
    assert abs(r.ffe - expected) <= 3 / n  # the analysis window (40 ms) straddles the edge
    assert r.ffe == r.vde


def test_binaural_is_scored_on_the_channel_average():
    mono = tone(200.0)
    left_only = np.stack([mono, np.zeros_like(mono)])  # (C, T): average is a half-amplitude tone
    assert ffe(mono, left_only, SR).ffe == 0.0
    cancelling = np.stack([mono, -mono])  # average is silence: every frame a voicing error
    assert ffe(mono, cancelling, SR).vde == 1.0
    # (T, C) as soundfile returns it
    assert ffe(mono, np.stack([mono, mono], axis=1), SR).ffe == 0.0
    assert ffe(mono, np.stack([tone(300.0), tone(300.0)], axis=1), SR).ffe == 1.0


def test_different_rates_and_lengths_are_aligned():
    r = ffe(tone(200.0, 2.0, 48000), tone(200.0, 1.5, 24000), 48000, sr_generated=24000)
    assert r.ffe == 0.0
    assert r.n_frames == praat_frames(1.5)  # cropped to the shorter signal


def test_ffe_from_tracks_hand_computed():
    ref_f0 = np.array([0, 100, 100, 100, 200, 0], float)
    est_f0 = np.array([0, 0, 125, 110, 100, 150], float)
    mk = lambda f: PitchTrack(f, f > 0, np.arange(f.size) * 0.01)
    r = ffe_from_tracks(mk(ref_f0), mk(est_f0))
    # voicing errors: frames 1 and 5; voiced in both: 2, 3, 4; gross: 2 (25 % off) and 4 (50 % off)
    assert (r.n_voicing_errors, r.n_voiced_both, r.n_gross_errors) == (2, 3, 2)
    assert r.ffe == pytest.approx(4 / 6)
    assert r.gpe == pytest.approx(2 / 3)
    assert r.vde == pytest.approx(2 / 6)
    assert ffe_from_tracks(mk(ref_f0), mk(est_f0), gross_error_ratio=0.3).n_gross_errors == 1


def test_bad_input_errors():
    good = tone(200.0)
    with pytest.raises(InvalidAudio, match="empty"):
        ffe(np.zeros(0), good, SR)
    bad = good.copy()
    bad[10] = np.nan
    with pytest.raises(InvalidAudio, match="non-finite"):
        ffe(good, bad, SR)
    with pytest.raises(InvalidAudio, match="no pitch frames"):
        ffe(good, good[:320], SR)  # 20 ms: shorter than Praat's 40 ms window
    with pytest.raises(InvalidAudio, match="shape"):
        ffe(good, np.zeros((2, 2, 100)), SR)
    with pytest.raises(InvalidAudio, match="sample rate"):
        ffe(good, good, 0)
    with pytest.raises(ValueError, match="tracker"):
        ffe(good, good, SR, FfeConfig(pitch=PitchConfig(tracker="yin")))


def test_crepe_option_on_tones():
    pytest.importorskip("torchcrepe")
    cfg = FfeConfig(pitch=PitchConfig(tracker="crepe", crepe_model="tiny"))
    tr = track_pitch(tone(200.0, 1.0), cfg.pitch)
    inner = tr.f0[5:-5]
    assert tr.voiced[5:-5].all()
    assert np.all(np.abs(inner - 200.0) < 200.0 * 0.03)
    assert ffe(tone(200.0, 1.0), tone(200.0, 1.0), SR, cfg).ffe == 0.0
    r = ffe(tone(200.0, 1.0), tone(300.0, 1.0), SR, cfg)
    assert r.gpe == 1.0 and r.ffe >= 0.9
    assert ffe(tone(200.0, 1.0), np.zeros(SR), SR, cfg).vde >= 0.9
