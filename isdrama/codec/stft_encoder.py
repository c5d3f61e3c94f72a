"""A frame-rate encoder for the trained codec: STFT features -> ConvNeXt blocks -> the 128-d latent.

The mirror of the Vocos decoder. Per frame (hop = the codec's 320 samples, Hann window ``n_fft``)
it sees log |X| and the phase as cos / sin of every bin, so the latent can carry both the spectrum
and the interaural time / phase cues of each ear; the ConvNeXt blocks (``vocos.models.VocosBackbone``)
run at 75 frames/s. Chosen over EnCodec's SEANet for from-scratch training on a CPU budget: a
SEANet (16 filters) trained 600 steps carried the level envelope but no spectral detail (its
latent's log-mel regression stayed at the trivial baseline, the round trip was a blurred envelope,
CER 0.99), while this encoder starts from the spectrum (docs/architecture.md, docs/benchmarks.md).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class StftEncoder(nn.Module):
    """Waveform (N, 1, S), S a multiple of ``hop_length`` -> latent (N, latent_dim, S / hop_length)."""

    def __init__(self, latent_dim: int, hop_length: int, cfg):
        super().__init__()
        from vocos.models import VocosBackbone

        self.n_fft, self.hop_length = int(cfg.n_fft), int(hop_length)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        bins = self.n_fft // 2 + 1
        self.backbone = VocosBackbone(
            input_channels=3 * bins, dim=cfg.dim, intermediate_dim=cfg.intermediate_dim, num_layers=cfg.num_layers
        )
        self.out = nn.Linear(cfg.dim, latent_dim)
        self.floor = float(cfg.log_floor)
        # what EncodecModel reads from an encoder (its frame rate = sample rate / prod(ratios))
        self.dimension = latent_dim
        self.ratios = [self.hop_length]

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """(N, 1, S) -> (N, 3 * bins, S / hop): log |X|, cos and sin of the phase per bin."""
        x = rearrange(wav, "n 1 s -> n s").float()
        frames = x.shape[-1] // self.hop_length
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True)
        spec = spec[..., :frames]
        mag = spec.abs()
        unit = spec / mag.clamp_min(1e-12)
        return torch.cat([mag.clamp_min(self.floor).log(), unit.real, unit.imag], dim=1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return rearrange(self.out(self.backbone(self.features(wav))), "n t d -> n d t")
