"""The global adaptor: AdaLN-Zero (DiT) on a global condition vector, with RMSNorm.

Each sub-block of a block gets (shift, scale, gate) from one zero-initialised linear of the
condition, so every block starts as the identity: x + gate * f(RMSNorm(x) * (1 + scale) + shift)
with gate = 0. The final layer's modulation and output projection are zero-initialised too.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TimestepEmbedding(nn.Module):
    """Flow time t in [0, 1] (B,) -> (B, dim): sinusoids of ``scale * t`` -> MLP."""

    def __init__(self, dim: int, freq_dim: int, scale: float):
        super().__init__()
        half = freq_dim // 2
        self.register_buffer(
            "freqs", torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half), persistent=False
        )
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (t.float() * self.scale)[:, None] * self.freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) * (1 + scale) + shift with (B, D) modulations."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNZero(nn.Module):
    """(shift, scale, gate) for ``n_sub`` sub-blocks from the condition (B, C); zero-initialised."""

    def __init__(self, cond_dim: int, d_model: int, n_sub: int):
        super().__init__()
        self.n_sub = n_sub
        self.linear = nn.Linear(cond_dim, 3 * n_sub * d_model)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        parts = self.linear(torch.nn.functional.silu(cond)).chunk(3 * self.n_sub, dim=-1)
        return [tuple(parts[3 * i : 3 * i + 3]) for i in range(self.n_sub)]


class FinalLayer(nn.Module):
    """RMSNorm -> AdaLN (shift, scale) -> linear to the output width; modulation and projection zero-initialised."""

    def __init__(self, d_model: int, cond_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=eps, elementwise_affine=False)
        self.modulation = nn.Linear(cond_dim, 2 * d_model)
        self.proj = nn.Linear(d_model, out_dim)
        for layer in (self.modulation, self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(torch.nn.functional.silu(cond)).chunk(2, dim=-1)
        return self.proj(modulate(self.norm(x), shift, scale))


__all__ = ["TimestepEmbedding", "AdaLNZero", "FinalLayer", "modulate"]
