"""Per-channel standardisation of frozen backbone features, fitted once on the training split.

A frozen randomly initialised backbone (the offline tiny configs) gives features whose variation
across frames is about 1 % of their common offset, so after LayerNorm the cross-attention sees
nearly the same memory for every line and learns nothing from it. Standardising each channel
with training-split statistics restores the signal. The statistics are buffers (saved with the
checkpoint, identical at training and inference).
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn


class FeatureStandardizer(nn.Module):
    """(x - mean) / std per channel: x (B, S, C), mask (B, S) -> (B, S, C), zero at padding.

    Args:
        dim: channels C.
        eps: floor of the standard deviation.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @staticmethod
    def moments(rows: torch.Tensor) -> torch.Tensor:
        """(N, C) valid feature rows -> (3, C) float64 [count, sum, sum of squares] to accumulate."""
        rows = rows.detach().double()
        count = torch.full_like(rows[0], float(rows.shape[0])) if rows.shape[0] else rows.new_zeros(rows.shape[1])
        return torch.stack([count, rows.sum(0), (rows * rows).sum(0)])

    @torch.no_grad()
    def fit_moments(self, moments: Iterable[torch.Tensor]) -> None:
        """Set mean/std from accumulated :meth:`moments` (summed over all parts)."""
        total = None
        for m in moments:
            total = m.to(self.mean.device) if total is None else total + m.to(total.device)
        if total is None or float(total[0].max()) < 2:
            raise ValueError("FeatureStandardizer.fit: fewer than 2 feature rows")
        n, s, ss = total
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0.0)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(var.sqrt().clamp_min(self.eps).to(self.std.dtype))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.is_fitted:
            raise RuntimeError("FeatureStandardizer used before fit_moments (no statistics)")
        y = (x - self.mean) / self.std
        if mask is not None:
            y = y * mask[..., None].to(y.dtype)
        return y


__all__ = ["FeatureStandardizer"]
