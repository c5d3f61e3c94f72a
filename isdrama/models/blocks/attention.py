"""Attention blocks of the Immersive Drama Transformer: RoPE self-attention through
``F.scaled_dot_product_attention`` with a key-padding mask (full, or local within a window of
frames on each side), and the zero-initialised tanh-gated cross-attention to the scene
(Flamingo: y = x + tanh(alpha) * attn(x, scene), alpha = 0 at init)."""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F


@functools.lru_cache(maxsize=32)
def rope_angles(length: int, dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (L, dim) of rotary position embeddings (pairs of channels rotated together); cached
    per (length, dim, base, device): every block and sampling step of one length shares them (read
    only; made outside inference mode, so a validation's angles serve the next training step too)."""
    with torch.inference_mode(False), torch.no_grad():
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
        angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., L, dim) by the angles (L, dim) (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def key_padding_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(B, S) True = valid -> SDPA boolean mask (B, 1, 1, S), True = attend."""
    return None if mask is None else mask[:, None, None, :]


class RoPESelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions, (B, L, D) -> (B, L, D). ``window``: None,
    every frame attends to every frame of its line; an int w, frame i attends to frames j with
    |i - j| <= w only (Samba's sliding window, symmetric: generation is non-autoregressive), so
    its cost grows linearly in L beyond w; lines of at most w + 1 frames are attended in full."""

    def __init__(self, d_model: int, n_heads: int, rope_base: float, dropout: float, window: Optional[int] = None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if window is not None and window < 1:
            raise ValueError(f"model.transformer.attention.window must be >= 1 frame or null, got {window}")
        self.n_heads, self.rope_base, self.dropout, self.window = n_heads, rope_base, dropout, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True = valid, pads on the right -> (B, L, D). Without autograd
        (sampling) lines of equal length run together without their padding (padded rows 0)."""
        qkv = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.n_heads)
        cos, sin = rope_angles(x.shape[1], qkv.shape[-1], self.rope_base, x.device)
        (q, k), v = apply_rope(qkv[:2], cos, sin).unbind(0), qkv[2]
        dropout = self.dropout if self.training else 0.0
        if self.window is not None and x.shape[1] - 1 > self.window:
            y = local_attention(q, k, v, mask, self.window, dropout)
        elif mask is not None and not torch.is_grad_enabled():
            y = attention_by_length(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_mask(mask), dropout_p=dropout)
        return self.out(rearrange(y, "b h l d -> b l (h d)"))


# blocks per window: frame i's keys are the 2 * BLOCKS_PER_WINDOW + 1 blocks around its own, about
# 2.25 w keys for the band's 2 w + 1 (fewer, smaller blocks: more wasted keys; more: more copies)
BLOCKS_PER_WINDOW = 4


def band_mask(offset: torch.Tensor, key_valid: torch.Tensor, window: int) -> torch.Tensor:
    """SDPA boolean mask (N, 1, Lq, Lk) of a band: offset (Lq, Lk) = key position - query position,
    key_valid (N, Lk); a query attends to the valid keys within ``window`` of it, and always to
    itself (a padded query far from any valid frame would otherwise have no key, which some SDPA
    kernels turn into NaN; what padded queries get is never read)."""
    return (((offset.abs() <= window) & key_valid[:, None, :]) | (offset == 0))[:, None]


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    window: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Banded self-attention, q, k, v (B, H, L, d), mask (B, L) True = valid (or None), frame i
    attending to the valid frames j with |i - j| <= window -> (B, H, L, d), in one SDPA call.
    Time and memory O(L window): the frames are cut into blocks of b = ceil(window / 4) and each
    block's queries meet only the keys of the 9 blocks around it, masked to the band. Lines short
    enough that the L^2 pairs are fewer than the blocks' take one call over the whole line with
    the band as its mask."""
    B, H, L, d = q.shape
    valid = torch.ones(B, L, dtype=torch.bool, device=q.device) if mask is None else mask
    block = math.ceil(window / BLOCKS_PER_WINDOW)
    reach = math.ceil(window / block)
    n = math.ceil(L / block)
    keys = (2 * reach + 1) * block
    if L * L <= n * block * keys:  # the whole line at once is the cheaper
        positions = torch.arange(L, device=q.device)
        allowed = band_mask(positions[None, :] - positions[:, None], valid, window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    extra = n * block - L

    def around(t: torch.Tensor, dim: int) -> torch.Tensor:
        """Blocks along ``dim`` (n of them, frames along dim + 1) -> for each block the 2 reach + 1
        blocks around it, joined along the frames: (..., n, (2 reach + 1) b, ...); zeros beyond
        the ends (masked)."""
        pads = [0, 0] * (t.dim() - dim - 1) + [reach, reach]
        t = F.pad(t, pads)
        return torch.cat([t.narrow(dim, i, n) for i in range(2 * reach + 1)], dim=dim + 1)

    def by_block(t: torch.Tensor) -> torch.Tensor:  # (B, H, n, m, d) -> (B n, H, m, d)
        return t.transpose(1, 2).flatten(0, 1)

    qb = by_block(F.pad(q, (0, 0, 0, extra)).unflatten(2, (n, block)))
    kb, vb = (by_block(around(F.pad(t, (0, 0, 0, extra)).unflatten(2, (n, block)), 2)) for t in (k, v))
    key_valid = around(F.pad(valid, (0, extra)).unflatten(1, (n, block)), 1).flatten(0, 1)  # (B n, keys)
    offset = (
        torch.arange(keys, device=q.device)[None, :] - reach * block - torch.arange(block, device=q.device)[:, None]
    )
    y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=band_mask(offset, key_valid, window), dropout_p=dropout_p)
    return y.unflatten(0, (B, n)).transpose(1, 2).flatten(2, 3)[:, :, :L]


def attention_by_length(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Self-attention of right-padded lines, q, k, v (B, H, L, d), mask (B, L): each group of lines
    of one length by one unmasked SDPA call on its valid frames (what the key-padding mask gives on
    valid queries, without the padding's work) -> (B, H, L, d), padded queries 0."""
    lengths = mask.sum(dim=1).tolist()
    L = q.shape[2]
    if all(n == L for n in lengths):
        return F.scaled_dot_product_attention(q, k, v)
    y = q.new_zeros(q.shape)
    for n in sorted(set(lengths)):
        if n == 0:
            continue
        rows = [b for b, m in enumerate(lengths) if m == n]
        if rows == list(range(rows[0], rows[-1] + 1)):  # consecutive lines (the guidance batch): views
            qs, ks, vs = (t[rows[0] : rows[-1] + 1, :, :n] for t in (q, k, v))
            y[rows[0] : rows[-1] + 1, :, :n] = F.scaled_dot_product_attention(qs, ks, vs)
        else:
            idx = torch.tensor(rows, device=q.device)
            qs, ks, vs = (t.index_select(0, idx)[:, :, :n] for t in (q, k, v))
            y[rows, :, :n] = F.scaled_dot_product_attention(qs, ks, vs)
    return y


class CrossAttention(nn.Module):
    """Multi-head attention from x (B, L, D) to a context (B, S, D_ctx) with mask (B, S)."""

    def __init__(self, d_model: int, d_context: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_context, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if context.shape[1] == 0:  # no context at all (a zero-length prompt): output 0, as for an empty row
            return x.new_zeros(*x.shape[:-1], self.out.out_features)
        # sampling only: in training q keeps its (zero) gradient path, which DDP expects of every parameter
        one_key = context.shape[1] == 1 and not torch.is_grad_enabled()
        if one_key and (context_mask is None or bool(context_mask.all())):
            # one key (a null scene): its softmax weight is exactly 1, every frame gets out(v)
            v = self.kv(context)[..., self.out.in_features :]
            return self.out(v).expand(*x.shape[:-1], self.out.out_features)
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.n_heads)
        k, v = rearrange(self.kv(context), "b s (two h d) -> two b h s d", two=2, h=self.n_heads)
        if context_mask is not None:  # a row without any context attends to nothing: output 0
            empty = ~context_mask.any(dim=1)
            if bool(empty.any()):
                context_mask = context_mask.clone()
                context_mask[empty, 0] = True
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_padding_mask(context_mask), dropout_p=self.dropout if self.training else 0.0
        )
        y = self.out(rearrange(y, "b h l d -> b l (h d)"))
        if context_mask is not None and bool(empty.any()):
            y = y * (~empty).to(y.dtype)[:, None, None]
        return y


class GatedCrossAttention(nn.Module):
    """x + tanh(alpha) * CrossAttention(RMSNorm(x), scene): a residual of its own (outside the
    AdaLN-Zero gate, so its only path is not a product of two zero gates); alpha = 0 at init."""

    def __init__(self, d_model: int, d_scene: int, n_heads: int, dropout: float, eps: float):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.attn = CrossAttention(d_model, d_scene, n_heads, dropout)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, scene: torch.Tensor, scene_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return x + torch.tanh(self.alpha) * self.attn(self.norm(x), scene, scene_mask)


__all__ = [
    "RoPESelfAttention",
    "CrossAttention",
    "GatedCrossAttention",
    "attention_by_length",
    "local_attention",
    "rope_angles",
    "apply_rope",
]
