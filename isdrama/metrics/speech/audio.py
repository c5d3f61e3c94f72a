"""Audio checks and conversions shared by the speech metrics (numpy only, no heavy imports).

Accepted waveform layouts (float or int arrays):
- (T,)   mono;
- (C, T) channel-first, C <= 8 (the project convention for tensors);
- (T, C) channel-last as returned by ``soundfile.read``, C <= 8, recognised when the first
  axis is longer than 8 and the second is at most 8.
Binaural and multi-channel input is reduced to the channel average, as the paper scores
speech metrics on the mono mix.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from isdrama.metrics.speech.errors import InvalidAudio

MAX_CHANNELS = 8


def to_mono(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """Validate ``wav`` and return its channel average as float64, shape (T,).

    Raises:
        InvalidAudio: not 1-D/2-D, empty, or containing NaN/inf.
    """
    arr = np.asarray(wav)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidAudio(f"{name}: expected a numeric waveform array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        mono = arr.astype(np.float64)
    elif arr.ndim == 2:
        if arr.shape[0] <= MAX_CHANNELS and arr.shape[0] <= arr.shape[1]:
            mono = arr.astype(np.float64).mean(axis=0)  # (C, T)
        elif arr.shape[1] <= MAX_CHANNELS:
            mono = arr.astype(np.float64).mean(axis=1)  # (T, C)
        else:
            raise InvalidAudio(
                f"{name}: 2-D audio must be (C, T) or (T, C) with at most {MAX_CHANNELS} channels, "
                f"got shape {arr.shape}"
            )
    else:
        raise InvalidAudio(f"{name}: expected shape (T,), (C, T) or (T, C), got {arr.shape}")
    if mono.size == 0:
        raise InvalidAudio(f"{name}: the waveform is empty (0 samples)")
    if not np.all(np.isfinite(mono)):
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise InvalidAudio(f"{name}: the waveform has {bad} non-finite sample(s) (NaN or inf)")
    if np.issubdtype(arr.dtype, np.integer):
        mono = mono / float(np.iinfo(arr.dtype).max)
    return mono


def check_sr(sr: int, name: str = "sample rate") -> int:
    """Return ``sr`` as int if it is a positive integer, else raise InvalidAudio."""
    if isinstance(sr, bool) or int(sr) != sr or sr <= 0:
        raise InvalidAudio(f"{name} must be a positive integer in Hz, got {sr!r}")
    return int(sr)


def resample(wav: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of a mono (T,) array from ``sr`` to ``target_sr`` (scipy)."""
    sr, target_sr = check_sr(sr), check_sr(target_sr, "target sample rate")
    if sr == target_sr:
        return wav
    from scipy.signal import resample_poly

    g = gcd(sr, target_sr)
    return resample_poly(wav, target_sr // g, sr // g)


def prepare(wav: np.ndarray, sr: int, target_sr: int, name: str = "audio", min_seconds: float = 0.0) -> np.ndarray:
    """Validate, mix to mono, resample to ``target_sr``; float32 (T,).

    Raises:
        InvalidAudio: bad input, or shorter than ``min_seconds``.
    """
    mono = to_mono(wav, name)
    sr = check_sr(sr)
    if mono.size / sr < min_seconds:
        raise InvalidAudio(f"{name}: {mono.size / sr:.3f} s is shorter than the minimum {min_seconds} s")
    return resample(mono, sr, target_sr).astype(np.float32)
