"""Shared audio preprocessing for the spatial metrics (IPD/ILD MAE and SpatialAST).

Everything here is a faithful, vectorised version of what the published ISDrama evaluation does
to a binaural file before it scores it (../shared/reference/isdrama-facts.md sections 3-4):

- reading: soundfile (torchaudio.load needs torchcodec, which is not available everywhere),
  channel 0 = left, 1 = right; a file that is not 2-channel, is empty or holds NaN/inf is refused
  with an error naming it;
- resampling for IPD/ILD: torchaudio's windowed-sinc resampler at its defaults, batched over
  zero-padded signals (exactly equal to resampling each signal alone, see `resample_batch`);
- resampling for SpatialAST: scipy.signal.resample_poly, one gain to a target dBFS RMS over both
  channels, pad/crop to a fixed length;
- STFT: Hann, centred, reflect padding per signal (librosa / torchlibrosa convention), batched;
- the Slaney mel matrix (librosa.filters.mel convention) without librosa at run time.

Shapes: B files, C channels (2), N samples, F = n_fft // 2 + 1 bins, T frames, M mel bands.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from isdrama.data.audio import read_audio
from isdrama.data.schema import DataError

__all__ = [
    "AudioInputError",
    "load_binaural",
    "check_binaural_tensor",
    "pad_stack",
    "resample_batch",
    "resampled_length",
    "resample_poly",
    "normalize_dbfs",
    "pad_or_crop",
    "frame_count",
    "stft_batch",
    "slaney_mel_matrix",
]


class AudioInputError(DataError):
    """An audio input to a metric is unusable; the message names the file (or batch item)."""


def load_binaural(path: Path | str, min_samples: int = 1) -> tuple[np.ndarray, int]:
    """Read a binaural file as float32 (2, N) plus its sample rate.

    Raises AudioInputError naming the file when it is missing, unreadable, empty, not
    2-channel, not finite, or shorter than ``min_samples``.
    """
    try:
        wav, sr = read_audio(path, expect_channels=2)
    except DataError as exc:
        raise AudioInputError(path, str(exc).split(": ", 1)[-1]) from exc
    if wav.shape[1] < min_samples:
        raise AudioInputError(path, f"audio has {wav.shape[1]} samples, need at least {min_samples}")
    return wav, sr


def check_binaural_tensor(wav: torch.Tensor, what: str = "waveform") -> None:
    """Validate a (B, 2, N) batch: 2 channels, N > 0, all finite. Errors name the batch item."""
    if wav.ndim != 3 or wav.shape[1] != 2:
        raise AudioInputError(what, f"expected shape (B, 2, N) with channel 0 = left, 1 = right, "
                                    f"got {tuple(wav.shape)}")
    if wav.shape[-1] == 0:
        raise AudioInputError(what, "audio is empty (0 samples)")
    finite = torch.isfinite(wav).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise AudioInputError(what, f"batch item(s) {bad} contain NaN or inf samples")


def pad_stack(wavs: Sequence[np.ndarray | torch.Tensor], dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (C, N_i) signals into a zero-padded (B, C, max N_i) tensor and lengths (B,)."""
    lengths = torch.tensor([w.shape[-1] for w in wavs], dtype=torch.long)
    out = torch.zeros(len(wavs), wavs[0].shape[0], int(lengths.max()), dtype=dtype)
    for i, w in enumerate(wavs):
        out[i, :, : w.shape[-1]] = torch.as_tensor(w, dtype=dtype)
    return out.to(device), lengths.to(device)


def resampled_length(length: int, orig_sr: int, new_sr: int) -> int:
    """Output length of torchaudio's resampler: ceil(new * N / orig) with the ratio reduced."""
    g = math.gcd(int(orig_sr), int(new_sr))
    o, n = orig_sr // g, new_sr // g
    return -(-n * int(length) // o)


def resample_batch(wav: torch.Tensor, lengths: torch.Tensor, orig_sr: int, new_sr: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """torchaudio windowed-sinc resampling (its defaults) of a zero-padded batch.

    wav (..., N) with true lengths (...,) -> (..., N') and new lengths. Equal to resampling each
    signal alone: torchaudio zero-pads every signal at its end before its strided convolution,
    so the padding of the batch enters only output samples past each signal's own length, which
    are then zeroed. Same as torchaudio.transforms.Resample(orig, new) (the published path).
    """
    if orig_sr == new_sr:
        return wav, lengths
    out = AF.resample(wav, int(orig_sr), int(new_sr))
    new_len = torch.tensor([resampled_length(int(n), orig_sr, new_sr) for n in lengths.flatten().tolist()],
                           dtype=torch.long, device=lengths.device).view_as(lengths)
    t = torch.arange(out.shape[-1], device=out.device)
    valid = t < new_len.unsqueeze(-1)
    if wav.ndim == 3:
        valid = valid.unsqueeze(1)
    return out * valid, new_len


def resample_poly(x: np.ndarray, orig_sr: int, new_sr: int, axis: int = -1) -> np.ndarray:
    """scipy.signal.resample_poly(x, new, orig) (the SpatialAST path); float64 in, float64 out."""
    from scipy.signal import resample_poly as _rp

    if orig_sr == new_sr:
        return x
    g = math.gcd(int(orig_sr), int(new_sr))
    return _rp(x, int(new_sr) // g, int(orig_sr) // g, axis=axis)


def normalize_dbfs(x: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale all channels by one gain so the RMS over every sample is ``target_dbfs``.

    A silent signal (RMS 0) is returned unchanged, as the published code does.
    """
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms == 0.0:
        return x
    gain = 10.0 ** ((target_dbfs - 20.0 * math.log10(rms)) / 20.0)
    return x * gain


def pad_or_crop(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end or crop the last axis to exactly ``n`` samples."""
    cur = x.shape[-1]
    if cur >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - cur)]
    return np.pad(x, pad)


def frame_count(n_samples: torch.Tensor | int, hop_length: int) -> torch.Tensor | int:
    """Frames of a centred STFT: 1 + N // hop (librosa, torch.stft and torchlibrosa agree)."""
    return 1 + n_samples // hop_length


@lru_cache(maxsize=16)
def _hann(win_length: int, n_fft: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    w = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    if win_length < n_fft:  # centre the window in the frame, as librosa.util.pad_center
        left = (n_fft - win_length) // 2
        w = F.pad(w, (left, n_fft - win_length - left))
    return w.to(dtype=dtype, device=device)


def _reflect_pad(x: torch.Tensor, half: int) -> torch.Tensor:
    """(B, N) -> (B, N + 2 half), numpy/torch "reflect" (edge sample not repeated); plain copies."""
    n = x.shape[-1]
    return torch.cat([x[:, 1 : half + 1].flip(-1), x, x[:, n - half - 1 : n - 1].flip(-1)], dim=-1)


def stft_batch(x: torch.Tensor, lengths: torch.Tensor, n_fft: int, hop_length: int,
               win_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred Hann STFT with reflect padding applied to each signal at its own length.

    x (B, N) zero-padded signals, lengths (B,) -> (complex (B, T_max, F) time-major, frames (B,)).
    Frames t < frames[b] are exactly those of the signal alone (librosa.stft(center=True,
    pad_mode="reflect"), transposed); later frames are padding and must be masked by the caller.
    Time-major output keeps every later per-bin operation on contiguous memory.
    """
    if x.ndim != 2:
        raise ValueError(f"stft_batch expects (B, N), got {tuple(x.shape)}")
    half = n_fft // 2
    short = (lengths <= half).nonzero().flatten().tolist()
    if short:
        raise ValueError(f"batch item(s) {short} have <= {half} samples: too short for a centred "
                         f"STFT with n_fft {n_fft} (reflect padding)")
    B, N = x.shape
    if bool((lengths == N).all()):
        padded = _reflect_pad(x, half)
    else:
        padded = x.new_zeros(B, N + 2 * half)
        for b, n in enumerate(lengths.tolist()):
            padded[b, : n + 2 * half] = _reflect_pad(x[b : b + 1, :n], half)[0]
    window = _hann(win_length, n_fft, x.dtype, str(x.device))
    frames = padded.unfold(-1, n_fft, hop_length) * window  # (B, T, n_fft)
    return torch.fft.rfft(frames, dim=-1), frame_count(lengths, hop_length)


@lru_cache(maxsize=16)
def _slaney_mel_cached(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
                       ) -> torch.Tensor:
    return AF.melscale_fbanks(n_fft // 2 + 1, float(f_min), float(f_max), int(n_mels), int(sample_rate),
                              norm="slaney", mel_scale="slaney")


def slaney_mel_matrix(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                      ) -> torch.Tensor:
    """(F, M) Slaney-scale, Slaney-normalised mel matrix = librosa.filters.mel(...).T (to 1e-6)."""
    return _slaney_mel_cached(int(sample_rate), int(n_fft), int(n_mels), float(f_min),
                              float(f_max)).to(dtype=dtype, device=device)
