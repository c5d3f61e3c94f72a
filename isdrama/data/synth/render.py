"""Binaural rendering of a moving talker at 48 kHz.

For each ear e the received signal is

    y_e(t) = h_e(dir(t_e)) * [ g_e(t_e) * s(t_e) ],   with t_e solving t = t_e + r_e(t_e) / c,

where s is the dry speech, r_e the mouth-to-ear distance, t_e the emission (retarded) time, so a
moving talker carries its exact Doppler shift (f c / (c - v) for an approaching one); the
gain g_e = r_ref / r_e times a speech directivity (the talker's facing); h_e is the HRIR of the
direction from the head centre, interpolated between measured directions. The per-sample delay
is a fractional read of s (4-point Lagrange). The time-varying HRIR filter is applied block-wise:
Hann frames of 2 * block samples at hop ``block`` (which sum to one) are filtered with the HRIR
of their centre and overlap-added, so filters crossfade between blocks without clicks. The
HRIRs' aligned onset (pre_delay) is compensated, so the sound emitted at t reaches ear e at
exactly t + r_e(t) / c.

Optional reverberation adds shoebox image sources (rendered by the same path, mirrored) and a
diffuse late tail (room.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
from scipy.signal import oaconvolve

from isdrama.data.synth.geometry import SPEED_OF_SOUND, ear_vectors
from isdrama.data.synth.hrtf import HRTFSet
from isdrama.data.synth.room import RoomPlacement, late_tail, mixing_time, reflection_gain


class SourcePath(Protocol):
    """A talker's mouth path: positions (N, 3) and facing unit vectors (N, 3) at times t (N,) s."""

    def position_at(self, t: np.ndarray) -> np.ndarray: ...

    def facing_at(self, t: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RenderConfig:
    """Renderer knobs."""

    block: int = 256  #: HRIR update hop in samples (5.3 ms at 48 kHz)
    control_step: int = 16  #: samples between exact evaluations of the geometry
    reference_distance: float = 1.0  #: distance (m) at which the gain is 1
    min_distance: float = 0.1  #: gain is capped as if no closer than this (m)
    directivity: float = 0.5  #: 0 = omnidirectional talker; a: gain 1 - a (1 - cos) / 2
    reverb_order: int = 1  #: image-source order when reverberation is on
    speed_of_sound: float = SPEED_OF_SOUND


@dataclass(frozen=True)
class AffinePath:
    """``base`` mapped by x -> A x + b (an image source); facing maps by A."""

    base: SourcePath
    matrix: np.ndarray
    offset: np.ndarray

    def position_at(self, t: np.ndarray) -> np.ndarray:
        return self.base.position_at(t) @ self.matrix.T + self.offset

    def facing_at(self, t: np.ndarray) -> np.ndarray:
        return self.base.facing_at(t) @ self.matrix.T


def fractional_read(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x (N,) read at fractional sample positions u (M,) by 4-point Lagrange; zero outside."""
    pad = 2
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad + 2)])
    i = np.floor(u)
    f = u - i
    i = np.clip(i.astype(np.int64) + pad, 1, len(xp) - 3)
    inside = (u > -2) & (u < len(x) + 1)
    c_m1 = -f * (f - 1) * (f - 2) / 6
    c_0 = (f + 1) * (f - 1) * (f - 2) / 2
    c_1 = -(f + 1) * f * (f - 2) / 2
    c_2 = (f + 1) * f * (f - 1) / 6
    y = c_m1 * xp[i - 1] + c_0 * xp[i] + c_1 * xp[i + 1] + c_2 * xp[i + 2]
    return np.where(inside, y, 0.0)


def arrival_times(path: SourcePath, t_emit: np.ndarray, c: float = SPEED_OF_SOUND) -> np.ndarray:
    """Times (N, 2) at which sound emitted at t_emit (N,) reaches the left and right ear."""
    dist = np.linalg.norm(ear_vectors(path.position_at(t_emit)), axis=-1)
    return np.asarray(t_emit)[:, None] + dist / c


def _directivity(path: SourcePath, t: np.ndarray, amount: float) -> np.ndarray:
    """Talker directivity gain (N, 2) towards each ear at emission times t (N,)."""
    if amount == 0:
        return np.ones((len(t), 2))
    to_ear = -ear_vectors(path.position_at(t))  # mouth -> ear, (N, 2, 3)
    cos = np.einsum("nec,nc->ne", to_ear, path.facing_at(t)) / np.maximum(np.linalg.norm(to_ear, axis=-1), 1e-9)
    return 1.0 - amount * (1.0 - cos) / 2.0


def _propagate(
    dry: np.ndarray,
    path: SourcePath,
    n_out: int,
    sr: int,
    cfg: RenderConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Delayed, distance- and directivity-weighted dry signal per ear.

    The geometry is evaluated exactly every ``cfg.control_step`` samples of emission time and
    interpolated linearly in between (paths are piecewise linear, distances smooth). Returns x
    (2, n_out) at the ears before HRIR filtering, and t_emit (2, n_out): the emission time of
    every output sample per ear.
    """
    c, step = cfg.speed_of_sound, cfg.control_step
    coarse = np.arange(0, n_out + sr // 100, sr // 100) / sr
    r_max = np.linalg.norm(ear_vectors(path.position_at(coarse)), axis=-1).max()
    lead = int(np.ceil(r_max / c * sr / step)) + 2
    t_e = np.arange(-lead, n_out // step + 2) * (step / sr)  # emission control grid (L,)
    dist = np.linalg.norm(ear_vectors(path.position_at(t_e)), axis=-1)  # (L, 2)
    t_r = t_e[:, None] + dist / c  # reception times, increasing
    gain = cfg.reference_distance / np.maximum(dist, cfg.min_distance)
    gain *= _directivity(path, t_e, cfg.directivity)
    t_out = np.arange(n_out) / sr
    x = np.empty((2, n_out))
    t_emit = np.empty((2, n_out))
    for e in range(2):
        if np.any(np.diff(t_r[:, e]) <= 0):
            raise ValueError("source moves at or above the speed of sound; cannot render")
        te = np.interp(t_out, t_r[:, e], t_e)
        t_emit[e] = te
        x[e] = fractional_read(dry, te * sr) * np.interp(te, t_e, gain[:, e])
    return x, t_emit


def _filter_blocks(x: np.ndarray, directions: np.ndarray, hrtf: HRTFSet, block: int) -> np.ndarray:
    """Time-varying HRIR filtering of x (2, N) with one direction (K, 3) per block centre k * block.

    K must be N // block + 2. Returns (2, N), onset pre-delay removed.
    """
    n = x.shape[1]
    k = n // block + 2
    n_fft = block * int(np.ceil((2 * block + hrtf.taps - 1) / block))
    padded = np.zeros((2, (k + 1) * block))
    padded[:, block : block + n] = x
    halves = padded.reshape(2, k + 1, block)
    window = np.sin(np.pi * (np.arange(2 * block) + 0.5) / (2 * block)) ** 2
    frames = np.concatenate([halves[:, :-1], halves[:, 1:]], axis=-1) * window  # (2, K, 2B)
    spec = np.fft.rfft(frames, n=n_fft, axis=-1)
    h = hrtf.interpolate_spectra(directions, n_fft).transpose(1, 0, 2)  # (2, K, F)
    y = np.fft.irfft(spec * h, n=n_fft, axis=-1)  # (2, K, n_fft)
    out = np.zeros((2, (k + n_fft // block) * block))
    for r in range(n_fft // block):
        out[:, r * block : (r + k) * block] += y[:, :, r * block : (r + 1) * block].reshape(2, k * block)
    start = block + hrtf.pre_delay
    return out[:, start : start + n]


def render_path(
    dry: np.ndarray, path: SourcePath, hrtf: HRTFSet, n_out: int, cfg: RenderConfig = RenderConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Render one propagation path (direct sound or an image source).

    dry: (N,) mono at hrtf.sample_rate, time 0 = the path's time 0. Returns the binaural signal
    (2, n_out) (left, right) and the emission time of every output sample per ear (2, n_out).
    """
    sr = hrtf.sample_rate
    x, t_emit = _propagate(np.asarray(dry, dtype=np.float64), path, n_out, sr, cfg)
    centres = np.minimum(np.arange(n_out // cfg.block + 2) * cfg.block, n_out - 1)
    directions = path.position_at(t_emit[:, centres].mean(axis=0))
    return _filter_blocks(x, directions, hrtf, cfg.block), t_emit


def render_binaural(
    dry: np.ndarray,
    path: SourcePath,
    hrtf: HRTFSet,
    n_out: Optional[int] = None,
    cfg: RenderConfig = RenderConfig(),
    room: Optional[RoomPlacement] = None,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Binaural audio (2, n_out) of ``dry`` (N,) along ``path``; reverberant when ``room`` is given.

    n_out defaults to len(dry). ``rng`` draws the late-tail noise (required with a room).
    """
    n_out = len(dry) if n_out is None else n_out
    audio, _ = render_path(dry, path, hrtf, n_out, cfg)
    if room is None:
        return audio
    if rng is None:
        raise ValueError("render_binaural: a room needs an rng for its late reverberation")
    beta, _ = reflection_gain(room.room.rt60, room.room.size)
    for matrix, offset, order in room.image_maps(cfg.reverb_order):
        image, _ = render_path(dry, AffinePath(path, matrix, offset), hrtf, n_out, cfg)
        audio += beta**order * image
    tail = late_tail(room.room, rng, hrtf.sample_rate, mixing_time(room, cfg.reverb_order))
    start = float(np.linalg.norm(path.position_at(np.zeros(1))[0])) / cfg.speed_of_sound
    shift = int(round(start * hrtf.sample_rate))
    delayed = np.zeros(n_out)
    delayed[shift:] = np.asarray(dry, dtype=np.float64)[: max(n_out - shift, 0)]
    audio += oaconvolve(delayed[None, :], tail, axes=-1)[:, :n_out]
    return audio
