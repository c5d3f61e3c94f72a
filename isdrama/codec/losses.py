"""Codec training losses: multi-resolution log-mel L1, the interaural cue loss, the adversarial terms.

Shapes: waveforms (B, C, S) at the codec rate (C = 2 ears for the interaural loss, any C for the
others); every loss returns a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
import torchaudio
from einops import rearrange
from torch import nn

from isdrama.utils.config import build_config


@dataclass
class MelResolution:
    """One STFT resolution of the mel loss."""

    n_fft: int
    hop_length: int
    n_mels: int


class MultiResolutionMelLoss(nn.Module):
    """Mean over resolutions of L1(log mel(y_hat), log mel(y)), magnitudes floored at ``floor``.

    Mel filters from torchaudio (HTK scale, 0 Hz to Nyquist), Hann windows, centred frames.
    """

    def __init__(self, sample_rate: int, resolutions: Sequence, floor: float):
        super().__init__()
        res = [build_config(MelResolution, r, "model.losses.mel.resolutions[]") for r in resolutions]
        if not res:
            raise ValueError("model.losses.mel.resolutions is empty")
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate, n_fft=r.n_fft, hop_length=r.hop_length, n_mels=r.n_mels, power=1.0, center=True
            )
            for r in res
        )
        self.floor = float(floor)

    def log_mel(self, wav: torch.Tensor, i: int) -> torch.Tensor:
        """(B, C, S) -> (B * C, n_mels, frames) log magnitudes of resolution ``i``."""
        return self.mels[i](rearrange(wav, "b c s -> (b c) s").float()).clamp_min(self.floor).log()

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = [F.l1_loss(self.log_mel(y_hat, i), self.log_mel(y, i)) for i in range(len(self.mels))]
        return torch.stack(losses).mean()


class InterauralCueLoss(nn.Module):
    """Keeps a per-ear codec's spatial cues: interaural level per band and interaural phase.

    STFT X_L, X_R of both ears (Hann, ``n_fft`` / ``hop_length``):

    - ILD term: per mel band b and frame, ILD = 10 log10((P_L,b + e) / (P_R,b + e)) dB with band
      powers P = mel(|X|^2) and e = 10^(floor_db / 10) x the clip's mean band power; L1 between
      reconstruction and input over the bands whose input power (L + R) is within ``floor_db``
      of the clip's loudest band, in dB.
    - IPD / ITD term: the normalised cross-spectrum c = X_L conj(X_R) / |X_L conj(X_R)| per bin
      up to ``phase_max_hz``; sum |c_hat - c|^2 weighted by the input's |X_L X_R| over the sum of
      weights (0 = same interaural phase everywhere, 4 = opposite); an ITD is a phase slope over
      frequency, so matching c per bin keeps it.

    ``forward`` returns (ild_db, phase) so both can be logged; the caller weighs them.
    """

    def __init__(
        self, sample_rate: int, n_fft: int, hop_length: int, n_bands: int, floor_db: float, phase_max_hz: float
    ):
        super().__init__()
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        fb = torchaudio.functional.melscale_fbanks(self.n_fft // 2 + 1, 0.0, sample_rate / 2, n_bands, sample_rate)
        self.register_buffer("fbank", fb, persistent=False)  # (F, n_bands)
        self.floor = 10.0 ** (float(floor_db) / 10.0)
        self.phase_bins = max(1, int(round(phase_max_hz / (sample_rate / self.n_fft))) + 1)

    def spectrum(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 2, S) -> complex (B, 2, F, frames)."""
        b = wav.shape[0]
        spec = torch.stft(
            rearrange(wav.float(), "b c s -> (b c) s"),
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            return_complex=True,
        )
        return rearrange(spec, "(b c) f t -> b c f t", b=b)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y.shape[1] != 2 or y_hat.shape != y.shape:
            raise ValueError(
                f"InterauralCueLoss needs two ears of equal shape, got {tuple(y_hat.shape)}, {tuple(y.shape)}"
            )
        X_hat, X = self.spectrum(y_hat), self.spectrum(y)
        bands = lambda spec: torch.einsum("bcft,fn->bcnt", spec.abs().square(), self.fbank)  # noqa: E731
        P_hat, P = bands(X_hat), bands(X)
        total = P.sum(1)  # (B, n, T)
        eps = self.floor * total.mean(dim=(1, 2), keepdim=True).unsqueeze(1) + 1e-12  # (B, 1, 1, 1)
        ild = lambda p: 10.0 * torch.log10((p[:, 0] + eps[:, 0]) / (p[:, 1] + eps[:, 0]))  # noqa: E731
        loud = (total >= self.floor * total.amax(dim=(1, 2), keepdim=True)).float()
        ild_err = ((ild(P_hat) - ild(P)).abs() * loud).sum() / loud.sum().clamp_min(1.0)
        k = self.phase_bins
        cross_hat = X_hat[:, 0, :k] * X_hat[:, 1, :k].conj()
        cross = X[:, 0, :k] * X[:, 1, :k].conj()
        weight = cross.abs()
        unit = lambda c: c / (c.abs() + 1e-8)  # noqa: E731
        phase_err = ((unit(cross_hat) - unit(cross)).abs().square() * weight).sum() / weight.sum().clamp_min(1e-12)
        return ild_err, phase_err


class AdversarialLoss(nn.Module):
    """Vocos' multi-resolution STFT discriminator (magnitude spectrograms at several resolutions)
    and multi-period discriminator, hinge losses and feature matching (``vocos.loss``), on each
    ear as a mono signal. ``generator`` -> (adversarial, feature matching); ``discriminator`` ->
    the discriminator's hinge loss."""

    def __init__(self, periods: Sequence[int], use_period: bool):
        super().__init__()
        from vocos.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator

        self.discriminators = nn.ModuleList([MultiResolutionDiscriminator()])
        if use_period:
            self.discriminators.append(MultiPeriodDiscriminator(periods=tuple(periods)))

    @staticmethod
    def _mono(wav: torch.Tensor) -> torch.Tensor:
        return rearrange(wav, "b c s -> (b c) s")

    def discriminator(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from vocos.loss import DiscriminatorLoss

        total = 0.0
        for disc in self.discriminators:
            real, fake, _, _ = disc(self._mono(y), self._mono(y_hat.detach()))
            total = total + DiscriminatorLoss()(real, fake)[0] / len(real)
        return total.squeeze()

    def generator(self, y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from vocos.loss import FeatureMatchingLoss, GeneratorLoss

        adv, fm = 0.0, 0.0
        for disc in self.discriminators:
            _, fake, fmap_real, fmap_fake = disc(self._mono(y), self._mono(y_hat))
            adv = adv + GeneratorLoss()(fake)[0] / len(fake)
            fm = fm + FeatureMatchingLoss()(fmap_real, fmap_fake) / len(fmap_real)
        return adv.squeeze(), fm.squeeze()
