"""F0 tracking with one fixed voicing rule per tracker, on a fixed frame hop.

Trackers:
- ``praat`` (default): Praat's autocorrelation method through praat-parselmouth
  (``Sound.to_pitch_ac``); a frame is voiced when Praat's path finder picks a voiced
  candidate (its ``voicing_threshold`` / ``silence_threshold`` / cost settings below).
- ``crepe``: torchcrepe (weights in its wheel, imported lazily); a frame is voiced when the
  periodicity, median-filtered over ``crepe_median_win`` frames and zeroed below
  ``crepe_silence_db``, reaches ``crepe_periodicity_threshold``.
Both return frames on the same grid for inputs of equal length: with the hop fixed, two
signals of the same duration give identical frame times (the FFE module crops to the shorter
signal before tracking).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isdrama.metrics.speech.errors import MetricUnavailable

TRACKERS = ("praat", "crepe")


@dataclass
class PitchConfig:
    """Pitch-tracker settings (defaults are Praat's own, except the 10 ms hop).

    Attributes:
        tracker: "praat" | "crepe".
        sample_rate: both signals are resampled to this rate before tracking (Hz).
        hop_s: frame hop in seconds (10 ms).
        f0_min, f0_max: search range in Hz (speech: 75-600).
        voicing_threshold, silence_threshold, octave_cost, octave_jump_cost,
        voiced_unvoiced_cost, max_candidates, very_accurate: Praat ``To Pitch (ac)`` settings.
        crepe_model: "full" | "tiny"; crepe_periodicity_threshold, crepe_silence_db,
        crepe_median_win: the crepe voicing rule; crepe_batch_size, device: crepe compute.
    """

    tracker: str = "praat"
    sample_rate: int = 16000
    hop_s: float = 0.01
    f0_min: float = 75.0
    f0_max: float = 600.0
    voicing_threshold: float = 0.45
    silence_threshold: float = 0.03
    octave_cost: float = 0.01
    octave_jump_cost: float = 0.35
    voiced_unvoiced_cost: float = 0.14
    max_candidates: int = 15
    very_accurate: bool = False
    crepe_model: str = "full"
    crepe_periodicity_threshold: float = 0.21
    crepe_silence_db: float = -60.0
    crepe_median_win: int = 3
    crepe_batch_size: int = 512
    device: str = "cpu"


@dataclass(frozen=True)
class PitchTrack:
    """F0 per frame: ``f0`` (N,) Hz with 0 where unvoiced, ``voiced`` (N,) bool, ``times`` (N,) s."""

    f0: np.ndarray
    voiced: np.ndarray
    times: np.ndarray


def track_pitch(wav: np.ndarray, cfg: PitchConfig) -> PitchTrack:
    """Track F0 of a mono float waveform (T,) already at ``cfg.sample_rate``."""
    if cfg.tracker == "praat":
        return _track_praat(wav, cfg)
    if cfg.tracker == "crepe":
        return _track_crepe(wav, cfg)
    raise ValueError(f"PitchConfig.tracker must be one of {TRACKERS}, got {cfg.tracker!r}")


def _track_praat(wav: np.ndarray, cfg: PitchConfig) -> PitchTrack:
    try:
        import parselmouth
    except ImportError as err:
        raise MetricUnavailable("ffe", "praat", f"`pip install praat-parselmouth` ({err})") from err
    snd = parselmouth.Sound(np.asarray(wav, np.float64), sampling_frequency=float(cfg.sample_rate))
    window_s = 3.0 / cfg.f0_min * (2 if cfg.very_accurate else 1)  # Praat's AC window length
    if snd.duration < window_s + cfg.hop_s:
        empty = np.zeros(0)
        return PitchTrack(empty, empty.astype(bool), empty)
    pitch = snd.to_pitch_ac(
        time_step=cfg.hop_s,
        pitch_floor=cfg.f0_min,
        max_number_of_candidates=cfg.max_candidates,
        very_accurate=cfg.very_accurate,
        silence_threshold=cfg.silence_threshold,
        voicing_threshold=cfg.voicing_threshold,
        octave_cost=cfg.octave_cost,
        octave_jump_cost=cfg.octave_jump_cost,
        voiced_unvoiced_cost=cfg.voiced_unvoiced_cost,
        pitch_ceiling=cfg.f0_max,
    )
    f0 = np.asarray(pitch.selected_array["frequency"], np.float64)
    voiced = f0 > 0
    return PitchTrack(np.where(voiced, f0, 0.0), voiced, np.asarray(pitch.xs(), np.float64))


def _track_crepe(wav: np.ndarray, cfg: PitchConfig) -> PitchTrack:
    try:
        import torch
        import torchcrepe
    except ImportError as err:
        raise MetricUnavailable("ffe", "crepe", f"`pip install torchcrepe` ({err})") from err
    if cfg.sample_rate != torchcrepe.SAMPLE_RATE:
        raise ValueError(f"crepe needs PitchConfig.sample_rate={torchcrepe.SAMPLE_RATE}, got {cfg.sample_rate}")
    hop = int(round(cfg.hop_s * cfg.sample_rate))
    audio = torch.as_tensor(np.asarray(wav, np.float32))[None]
    f0, per = torchcrepe.predict(
        audio,
        cfg.sample_rate,
        hop,
        cfg.f0_min,
        cfg.f0_max,
        cfg.crepe_model,
        return_periodicity=True,
        batch_size=cfg.crepe_batch_size,
        device=cfg.device,
        decoder=torchcrepe.decode.viterbi,
        pad=True,
    )
    per = torchcrepe.filter.median(per, cfg.crepe_median_win)
    per = torchcrepe.threshold.Silence(cfg.crepe_silence_db)(per, audio, cfg.sample_rate, hop)
    voiced = (per[0] >= cfg.crepe_periodicity_threshold).cpu().numpy()
    f0 = f0[0].cpu().numpy().astype(np.float64)
    times = np.arange(f0.size) * hop / cfg.sample_rate
    return PitchTrack(np.where(voiced, f0, 0.0), voiced, times)
