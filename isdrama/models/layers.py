"""Small shared building blocks: masking helpers, positional encodings, conv stacks, a
pre-norm Transformer with optional cross-attention, and the base of frozen pretrained wrappers.

Mask convention everywhere in ``isdrama.models``: a boolean mask is **True for valid** positions
(frames, tokens) and False for padding. Helpers convert to PyTorch's "True = ignore" form.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


# --------------------------------------------------------------------------- masking helpers
def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """(B,) integer lengths -> (B, T) bool mask, True for positions < length."""
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (B,), got shape {tuple(lengths.shape)}")
    max_len = int(lengths.max().item()) if max_len is None else int(max_len)
    steps = torch.arange(max_len, device=lengths.device)
    return steps[None, :] < lengths[:, None]


def masked_fill_invalid(x: torch.Tensor, mask: Optional[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """Set padded steps of x (B, T, ...) to ``value``; mask (B, T) is True for valid steps."""
    if mask is None:
        return x
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    return x.masked_fill(~m, value)


def masked_mean(x: torch.Tensor, mask: Optional[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """Mean of x (B, T, D) over ``dim`` counting only valid steps (mask (B, T), True valid).

    A row with no valid step gives zeros (never NaN).
    """
    if mask is None:
        return x.mean(dim=dim)
    m = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    total = (x * m).sum(dim=dim)
    count = m.sum(dim=dim).clamp_min(1.0)
    return total / count


def check_mask(mask: Optional[torch.Tensor], shape: tuple[int, int], name: str) -> None:
    """Raise a clear error if ``mask`` is not a bool tensor of ``shape`` (B, T)."""
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = valid), got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")


# --------------------------------------------------------------------------- frozen backbones
class FreezableBackbone(nn.Module):
    """Base of a wrapper around a pretrained model ``self.model`` that may be frozen.

    Frozen (:meth:`set_frozen`), the model has no gradients and stays in eval mode through
    ``.train()``; run it under :meth:`grad_context` (no autograd graph when frozen).
    """

    model: nn.Module
    frozen: bool = False

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = bool(frozen)
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> "FreezableBackbone":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def grad_context(self) -> torch.set_grad_enabled:
        """Gradient mode of the wrapped model's forward: off when frozen, else unchanged."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen)


# ---------------------------------------------------------------------- positional encodings
class SinusoidalEncoding(nn.Module):
    """Sinusoidal encoding of real-valued positions (fractional positions allowed).

    Positions are in any unit shared by the streams that must align (the pose encoder uses
    codec frames, so a video frame at time s seconds sits at position s * frame_rate).

    Args:
        dim: output width (even).
        max_period: longest wavelength, in position units.
    """

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"SinusoidalEncoding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, T) float -> (B, T, dim)."""
        angles = positions.to(torch.float32)[..., None] * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


# ----------------------------------------------------------------------------- conv blocks
class MaskedConvBlock(nn.Module):
    """Residual block: Conv1d (same padding) -> GELU -> dropout, + residual, then LayerNorm.

    Padded frames are zeroed before the convolution so they never leak into valid frames.
    Works on (B, T, D).
    """

    def __init__(self, dim: int, kernel_size: int = 5, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True valid -> (B, T, D), padded frames zero."""
        h = masked_fill_invalid(x, mask)
        h = rearrange(self.conv(rearrange(h, "b t d -> b d t")), "b d t -> b t d")
        h = self.norm(x + self.dropout(F.gelu(h)))
        return masked_fill_invalid(h, mask)


class ConvStack(nn.Module):
    """Input projection (a kernel-k Conv1d) followed by ``n_blocks`` residual conv blocks.

    (B, T, in_dim) -> (B, T, dim); padded frames are zero in and out.
    """

    def __init__(self, in_dim: int, dim: int, n_blocks: int = 2, kernel_size: int = 5, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.proj = nn.Conv1d(in_dim, dim, kernel_size, padding=kernel_size // 2)
        self.blocks = nn.ModuleList(MaskedConvBlock(dim, kernel_size, dropout) for _ in range(n_blocks))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = masked_fill_invalid(x, mask)
        h = rearrange(self.proj(rearrange(h, "b t d -> b d t")), "b d t -> b t d")
        h = masked_fill_invalid(h, mask)
        for block in self.blocks:
            h = block(h, mask)
        return h


# ------------------------------------------------------------------------------ transformer
class FeedForward(nn.Module):
    """Position-wise feed-forward: either an MLP or (FastSpeech-style) a Conv1d of ``kernel_size``.

    (B, T, D) -> (B, T, D). With ``kernel_size > 1`` padded steps are zeroed before the conv.
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int = 1, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"feed-forward kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        if kernel_size == 1:
            self.fc1 = nn.Linear(dim, hidden)
        else:
            self.fc1 = nn.Conv1d(dim, hidden, kernel_size, padding=kernel_size // 2)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.kernel_size == 1:
            h = self.fc1(x)
        else:
            h = masked_fill_invalid(x, mask)
            h = rearrange(self.fc1(rearrange(h, "b t d -> b d t")), "b d t -> b t d")
        return self.fc2(self.dropout(F.gelu(h)))


class TransformerLayer(nn.Module):
    """Pre-norm layer: self-attention, optional cross-attention to a memory, feed-forward.

    Args:
        dim: model width D.
        n_heads: attention heads (D must be divisible by it).
        ff_mult: feed-forward hidden = ff_mult * D.
        ff_kernel: 1 for an MLP, >1 for a FastSpeech conv feed-forward.
        cross_attention: add a cross-attention sub-layer (memory width = D).
        dropout: dropout on attention weights and residual branches.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ff_mult: float = 4.0,
        ff_kernel: int = 1,
        cross_attention: bool = False,
        dropout: float = 0.1,
    ):
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by n_heads {n_heads}")
        self.norm_sa = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.cross_attention = cross_attention
        if cross_attention:
            self.norm_ca = nn.LayerNorm(dim)
            self.norm_mem = nn.LayerNorm(dim)
            self.cross_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(ff_mult * dim), ff_kernel, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        memory: Optional[torch.Tensor] = None,
        memory_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x (B, T, D), mask (B, T); memory (B, S, D), memory_mask (B, S); True = valid.

        A row whose memory is entirely padding receives no cross-attention update.
        """
        pad = None
        if mask is not None:
            # a row with no valid step would give NaN; let it attend anywhere (it is zeroed)
            pad = ~(mask | ~mask.any(dim=1, keepdim=True))
        h = self.norm_sa(x)
        h, _ = self.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)
        x = x + self.dropout(h)
        if self.cross_attention:
            if memory is None:
                raise ValueError("this TransformerLayer has cross-attention: pass memory")
            mem = self.norm_mem(memory)
            mem_pad = None
            has_memory = None
            if memory_mask is not None:
                has_memory = memory_mask.any(dim=1)
                # keep softmax finite for rows without any memory; their update is zeroed below
                mem_pad = ~(memory_mask | ~has_memory[:, None])
            h, _ = self.cross_attn(self.norm_ca(x), mem, mem, key_padding_mask=mem_pad, need_weights=False)
            if has_memory is not None:
                h = h * has_memory[:, None, None].to(h.dtype)
            x = x + self.dropout(h)
        x = x + self.dropout(self.ff(self.norm_ff(x), mask))
        return masked_fill_invalid(x, mask)


class Transformer(nn.Module):
    """A stack of :class:`TransformerLayer` with a final LayerNorm.

    (B, T, D) [+ memory (B, S, D)] -> (B, T, D); padded steps of the output are zero.
    """

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_heads: int,
        ff_mult: float = 4.0,
        ff_kernel: int = 1,
        cross_attention: bool = False,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, n_heads, ff_mult, ff_kernel, cross_attention, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        memory: Optional[torch.Tensor] = None,
        memory_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask, memory, memory_mask)
        return masked_fill_invalid(self.norm(x), mask)
