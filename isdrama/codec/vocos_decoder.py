"""A Vocos decoder for EnCodec latents (the ``vocos`` package), and Vocos' pretrained EnCodec decoder.

Vocos computes at the 75 Hz frame rate (ConvNeXt blocks) and turns each frame into an STFT frame
(``ISTFTHead``: log-magnitude + phase -> inverse STFT with hop 320), so it costs far less than a
SEANet decoder, which runs its convolutions at the sample rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

#: Vocos' EnCodec 24 kHz decoder on the Hugging Face hub (``Vocos.from_pretrained``).
PRETRAINED_REPO = "charactr/vocos-encodec-24khz"
#: the kbps each of its bandwidth embeddings stands for
PRETRAINED_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0)


class VocosDecoder(nn.Module):
    """EnCodec latent (N, D, T) -> waveform (N, 1, T * hop), Vocos backbone + iSTFT head."""

    def __init__(self, latent_dim: int, hop_length: int, cfg):
        super().__init__()
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        self.backbone = VocosBackbone(
            input_channels=latent_dim,
            dim=cfg.dim,
            intermediate_dim=cfg.intermediate_dim,
            num_layers=cfg.num_layers,
            adanorm_num_embeddings=cfg.bandwidth_embeddings,
        )
        self.head = ISTFTHead(dim=cfg.dim, n_fft=cfg.n_fft, hop_length=hop_length, padding="same")
        self.hop_length = hop_length
        self.register_buffer("bandwidth_id", torch.tensor([int(cfg.bandwidth_id)]), persistent=False)
        self._adanorm = cfg.bandwidth_embeddings is not None

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        kwargs = {"bandwidth_id": self.bandwidth_id} if self._adanorm else {}
        wav = self.head(self.backbone(latent, **kwargs))  # (N, T * hop)
        return wav.unsqueeze(1)


def load_pretrained_vocos(decoder: VocosDecoder, source: Optional[str] = None) -> str:
    """Load Vocos' pretrained EnCodec decoder (backbone + head) into ``decoder``; return the source.

    ``source``: a folder holding Vocos' ``pytorch_model.bin`` (as the hub stores it), that file, or
    None for the hub (:data:`PRETRAINED_REPO`; fails offline with a ConnectionError-like error).
    The feature extractor's EnCodec weights in that file are not needed (the codec has its own).
    """
    if source is None:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo_id=PRETRAINED_REPO, filename="pytorch_model.bin"))
    else:
        path = Path(source).expanduser()
        path = path / "pytorch_model.bin" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Vocos weights (pytorch_model.bin) not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    mine = {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}
    if not mine:
        raise ValueError(f"{path}: holds no Vocos backbone./head. weights")
    try:
        decoder.load_state_dict(mine)
    except RuntimeError as exc:
        raise ValueError(f"{path}: Vocos weights do not fit codec.architecture.vocos: {exc}") from exc
    return f"vocos:{path}"
