"""The F0 head of the first block: binaural log-F0 and voicing per frame, fed back to later blocks.

Output channels: [log-F0 left, log-F0 right, voicing logit left, voicing logit right], log-F0 as
log(f0 / f0_ref_hz) (``model.transformer.f0_ref_hz``). The prediction is embedded (zero-initialised
linear) and added to the stream the later blocks see.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: output channels of the head
F0_CHANNELS = 4


class F0Head(nn.Module):
    """(B, L, D) -> prediction (B, L, 4) and the stream with the prediction's embedding added."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.proj = nn.Linear(d_model, F0_CHANNELS)
        self.feedback = nn.Linear(F0_CHANNELS, d_model)
        nn.init.zeros_(self.feedback.weight)
        nn.init.zeros_(self.feedback.bias)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.proj(self.norm(h))
        return pred, h + self.feedback(pred)


def f0_loss(pred: torch.Tensor, log_f0: torch.Tensor, voiced: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of log-F0 on voiced frames + BCE of voicing on valid frames.

    pred (B, T, 4); log_f0 (B, T, 2) log(f0 / ref); voiced (B, T, 2) bool; mask (B, T) valid frames.
    """
    m = mask.unsqueeze(-1).expand_as(voiced)
    v = voiced & m
    mse = ((pred[..., :2].float() - log_f0.float()) ** 2 * v).sum() / v.sum().clamp_min(1)
    bce = F.binary_cross_entropy_with_logits(pred[..., 2:].float(), voiced.float(), reduction="none")
    return mse + (bce * m).sum() / m.sum().clamp_min(1)


__all__ = ["F0Head", "f0_loss", "F0_CHANNELS"]
