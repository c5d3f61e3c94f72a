"""The published IPD/ILD computation (reference mode), with the published code's own library.

The published ISDrama evaluation (`gen_ipd_ild.py` then `evaluate.py`) computes, per file:

1. the binaural wav as float32 (2, N) (torchaudio.load; here soundfile: the same samples for
   PCM-16 and float files), resampled to 32 kHz by ``torchaudio.transforms.Resample`` at its
   defaults when the rate differs;
2. torchlibrosa's ``STFT(n_fft=1024, hop_length=320, win_length=1024, window='hann',
   center=True, pad_mode='reflect')`` of the (2, N) signal: a float32 ``conv1d`` against a DFT
   matrix, real and imaginary parts (2, 1, T, 513);
3. per channel phase ``atan2(imag, real)`` and magnitude ``sqrt(real^2 + imag^2)``;
   IPD = phase_R - phase_L (not wrapped), ILD = 20 log10((|R| + 1e-10) / (|L| + 1e-10)), (T, 513);
4. each times ``LogmelFilterBank(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000).melW``
   (513, 128) -> (T, 128) float32;

and per pair (``calculate_mae_time``): crop both to the common top-left, mean |a - b|, divided
AGAIN by the cropped frame count. The reported figure is the mean over files x 100.

In near-silent bins (digital silence between syllables, a noise floor) the unwrapped IPD and the
1e-10-guarded ILD are decided by that DFT's float32 rounding, so any other arithmetic (an FFT,
a float64 DFT, another batch shape for the convolution, which may select another algorithm)
gives other numbers. :class:`PublishedSpatialCues` therefore builds the published objects once
and applies, per file, exactly the published operations to tensors of exactly the published
shapes; only the per-file object construction, the .npy round trip and the one-file-at-a-time
order are gone (pairs run on worker threads, see :mod:`isdrama.metrics.spatial`).

Shapes: N samples, T frames, F = 513 bins, M = 128 mel bands.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isdrama.metrics.audio_prep import AudioInputError, load_binaural

__all__ = ["PublishedSpatialCues", "PublishedPairError", "published_pair_error"]


@dataclass
class PublishedPairError:
    """One pair's published figures: ipd, ild (mean |a - b| / T, float32 as published), the same
    per mel band (M,) for plots (their mean is ipd / ild up to float rounding), frames T compared."""

    ipd: float
    ild: float
    ipd_bands: np.ndarray
    ild_bands: np.ndarray
    frames: int


def _mae_time(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """The published ``calculate_mae_time`` of two (T, M) matrices, plus its per-band values."""
    rows, cols = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    diff = np.abs(a[:rows, :cols] - b[:rows, :cols])
    return np.mean(diff) / rows, diff.mean(axis=0) / rows


def published_pair_error(gt: tuple[np.ndarray, np.ndarray], gen: tuple[np.ndarray, np.ndarray]) -> PublishedPairError:
    """Published per-pair error of two (ipd, ild) feature pairs, each (T, M)."""
    ipd, ipd_bands = _mae_time(gt[0], gen[0])
    ild, ild_bands = _mae_time(gt[1], gen[1])
    return PublishedPairError(float(ipd), float(ild), ipd_bands, ild_bands, min(gt[0].shape[0], gen[0].shape[0]))


class PublishedSpatialCues:
    """The published feature extractor's objects, built once, applied per file.

    Args:
        sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, ild_eps: the published
            analysis parameters (``SpatialCueConfig``).
        device: torch device of the computation (the published script runs on the CPU).

    Thread safe: the torchlibrosa modules are read-only at inference, resamplers are created
    under a lock.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        win_length: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        ild_eps: float,
        device: torch.device | str = "cpu",
    ):
        try:
            from torchlibrosa.stft import STFT, LogmelFilterBank
        except ImportError as exc:  # a declared dependency; say what to install if it is missing
            raise ImportError(
                "IPD/ILD reference mode computes with torchlibrosa, as the published "
                "script does: pip install torchlibrosa==0.1.0"
            ) from exc
        self.sample_rate = int(sample_rate)
        self.ild_eps = float(ild_eps)
        self.device = torch.device(device)
        self.stft = STFT(
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win_length,
            window="hann",
            center=True,
            pad_mode="reflect",
            freeze_parameters=True,
        ).to(self.device)
        mel = LogmelFilterBank(
            sr=sample_rate,
            n_fft=n_fft,
            n_mels=n_mels,
            fmin=f_min,
            fmax=f_max,
            ref=1.0,
            amin=1e-10,
            top_db=None,
            freeze_parameters=True,
        )
        self.mel = mel.melW.detach().to(self.device)  # (F, M) the published melW
        self._min_samples = n_fft // 2 + 1  # reflect padding needs more samples than n_fft // 2
        self._resamplers: dict[int, torch.nn.Module] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cues, device: torch.device | str = "cpu") -> "PublishedSpatialCues":
        """From a :class:`isdrama.metrics.spatial.SpatialCueConfig`."""
        return cls(
            cues.sample_rate,
            cues.n_fft,
            cues.hop_length,
            cues.win_length,
            cues.n_mels,
            cues.f_min,
            cues.f_max,
            cues.ild_eps,
            device,
        )

    def _resampler(self, orig_sr: int) -> torch.nn.Module:
        with self._lock:
            rs = self._resamplers.get(orig_sr)
            if rs is None:
                import torchaudio

                rs = torchaudio.transforms.Resample(
                    orig_freq=orig_sr, new_freq=self.sample_rate, dtype=torch.float32
                ).to(self.device)
                self._resamplers[orig_sr] = rs
            return rs

    @torch.no_grad()
    def resample(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(2, N) float32 at ``sample_rate`` -> (2, N') at the analysis rate (published resampler)."""
        if int(sample_rate) == self.sample_rate:
            return wav
        return self._resampler(int(sample_rate))(wav)

    @torch.no_grad()
    def features(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(2, N) float32 at the analysis rate (0 = left) -> IPD, ILD mel features (T, M) float32.

        The published operations in the published order on the published shapes (see the module
        notes); changing any of them changes the numbers in near-silent bins.
        """
        if wav.ndim != 2 or wav.shape[0] != 2:
            raise ValueError(f"expected a (2, N) binaural signal, got {tuple(wav.shape)}")
        real, imag = self.stft(wav.to(self.device, torch.float32))  # (2, 1, T, F) each
        real_left, imag_left, real_right, imag_right = real[0], imag[0], real[1], imag[1]  # (1, T, F)
        phase_left = torch.atan2(imag_left, real_left)
        phase_right = torch.atan2(imag_right, real_right)
        ipd = phase_right - phase_left
        mag_left = torch.sqrt(real_left**2 + imag_left**2)
        mag_right = torch.sqrt(real_right**2 + imag_right**2)
        eps = self.ild_eps
        ild = 20 * torch.log10((mag_right + eps) / (mag_left + eps))
        return torch.matmul(ipd.squeeze(0), self.mel), torch.matmul(ild.squeeze(0), self.mel)

    def signal_features(
        self, wav: torch.Tensor, sample_rate: int, what: str = "waveform"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(2, N) float32 at ``sample_rate`` -> published (ipd, ild) features as numpy (T, M)."""
        wav = self.resample(wav.to(self.device, torch.float32), sample_rate)
        if wav.shape[-1] < self._min_samples:
            raise AudioInputError(
                what,
                f"{wav.shape[-1]} samples at {self.sample_rate} Hz: too short for a "
                f"centred STFT, need at least {self._min_samples}",
            )
        ipd, ild = self.features(wav)
        return ipd.cpu().numpy(), ild.cpu().numpy()

    def file_features(self, path: Path | str) -> tuple[np.ndarray, np.ndarray]:
        """Published features of one binaural file (errors name the file)."""
        wav, sr = load_binaural(path)  # float32 (2, N); checks: exists, 2 channels, finite, not empty
        return self.signal_features(torch.from_numpy(wav), sr, str(path))

    def file_pair_error(self, gt_path: Path | str, gen_path: Path | str) -> PublishedPairError:
        """Published per-pair figures of two files."""
        return published_pair_error(self.file_features(gt_path), self.file_features(gen_path))
