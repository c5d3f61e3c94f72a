"""F0 Frame Error (FFE) with its GPE and VDE components.

On N time-aligned frames of a reference (ground truth) and an estimate (generated audio):
- voicing decision error: voiced in one and not in the other;
- gross pitch error: voiced in both and |f_est - f_ref| > ``gross_error_ratio`` * f_ref;
- FFE = (voicing errors + gross pitch errors) / N;
- VDE = voicing errors / N;  GPE = gross pitch errors / (frames voiced in both) (NaN when no
  frame is voiced in both: there is nothing to measure, the value is not made up).
Alignment: both signals are mixed to mono (binaural -> channel average, as in the paper),
resampled to one rate, cropped to the shorter one, then tracked with the same hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from isdrama.metrics.speech.audio import check_sr, prepare
from isdrama.metrics.speech.errors import InvalidAudio
from isdrama.metrics.speech.pitch import PitchConfig, PitchTrack, track_pitch


@dataclass
class FfeConfig:
    """FFE settings: the 20 % gross-error tolerance and the pitch tracker."""

    gross_error_ratio: float = 0.2
    pitch: PitchConfig = field(default_factory=PitchConfig)


@dataclass(frozen=True)
class FfeResult:
    """FFE and its parts; counts are frame counts on the aligned grid."""

    ffe: float
    gpe: float
    vde: float
    n_frames: int
    n_voicing_errors: int
    n_gross_errors: int
    n_voiced_both: int

    def as_dict(self) -> dict[str, float]:
        return {"ffe": self.ffe, "gpe": self.gpe, "vde": self.vde, "ffe_frames": float(self.n_frames)}


def ffe_from_tracks(ref: PitchTrack, est: PitchTrack, gross_error_ratio: float = 0.2) -> FfeResult:
    """FFE of two tracks on the same frame grid (lengths may differ by a frame; cropped)."""
    n = min(ref.f0.size, est.f0.size)
    if n == 0:
        raise InvalidAudio("no pitch frames to compare (audio shorter than one analysis window)")
    rv, ev = ref.voiced[:n].astype(bool), est.voiced[:n].astype(bool)
    rf, ef = ref.f0[:n], est.f0[:n]
    both = rv & ev
    voicing_err = int(np.count_nonzero(rv != ev))
    gross = int(np.count_nonzero(both & (np.abs(ef - rf) > gross_error_ratio * rf)))
    n_both = int(np.count_nonzero(both))
    return FfeResult(
        ffe=(voicing_err + gross) / n,
        gpe=gross / n_both if n_both else float("nan"),
        vde=voicing_err / n,
        n_frames=n,
        n_voicing_errors=voicing_err,
        n_gross_errors=gross,
        n_voiced_both=n_both,
    )


def ffe(
    reference: np.ndarray,
    generated: np.ndarray,
    sr: int,
    cfg: FfeConfig | None = None,
    sr_generated: int | None = None,
) -> FfeResult:
    """FFE of ``generated`` against ``reference`` (waveforms (T,), (C, T) or (T, C)).

    Args:
        reference: ground-truth audio at ``sr`` Hz.
        generated: generated audio at ``sr_generated`` Hz (default ``sr``).
        cfg: tolerance and pitch tracker (default ``FfeConfig()``: Praat, 10 ms, 75-600 Hz).

    Raises:
        InvalidAudio: empty, non-finite, or too short to hold one analysis frame.
    """
    cfg = cfg or FfeConfig()
    sr = check_sr(sr)
    sr_gen = check_sr(sr_generated) if sr_generated is not None else sr
    ref = prepare(reference, sr, cfg.pitch.sample_rate, name="reference")
    gen = prepare(generated, sr_gen, cfg.pitch.sample_rate, name="generated")
    n = min(ref.size, gen.size)
    return ffe_from_tracks(track_pitch(ref[:n], cfg.pitch), track_pitch(gen[:n], cfg.pitch), cfg.gross_error_ratio)
