"""The Mamba layer (selective SSM) with the official ``mamba-ssm`` parameter names, and its
bidirectional form for non-autoregressive generation.

:class:`MambaLayer` holds exactly the parameters of ``mamba_ssm.Mamba`` (v1): ``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``, same shapes and init, so a
state dict of one loads on every scan backend (:mod:`isdrama.models.blocks.scan`).
:class:`BidirectionalMamba` runs one layer forward in time and a second one over the flipped
sequence (Vim / Dimba style) and adds them.

Padding is exact: sequences are right-padded, the inner stream is zeroed on padded frames before
and after the causal depthwise convolution, so a padded frame never reaches a valid one, and in
the flipped direction the leading pads leave the state at zero; a padded line gives the output
of the line alone. Flipping reverses each line within its own length.

Sampling on CPU (no autograd, the chunked backend) takes :func:`mamba_lines_fused`: the lines
packed without their padding, both directions from one input and one output projection, the
backward direction read backwards by the fused kernels instead of flipped copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from isdrama.models.blocks.cpu_kernels import PackedLines, conv_silu_lines, fused_kernels_available, scan_lines
from isdrama.models.blocks.scan import BACKENDS, selective_scan, softplus_delta


@dataclass
class MambaConfig:
    """One Mamba layer (configs/model/transformer/*.yaml ``mamba``; mamba-ssm's meanings).

    d_state: SSM state per channel. d_conv: causal depthwise conv width. expand: inner width =
    expand * d_model. dt_rank: rank of the delta projection (``auto`` = ceil(d_model / 16)).
    dt_min / dt_max / dt_init_floor: the delta bias init range. backend: ``chunked`` | ``loop`` |
    ``mambapy`` | ``cuda``. chunk: chunk length of the chunked scan (0 = ceil(sqrt(L))).
    bidirectional: add a second layer over the flipped sequence. checkpoint: activation
    checkpointing per layer in training.
    """

    d_state: int
    d_conv: int
    expand: int
    dt_rank: int | str
    dt_min: float
    dt_max: float
    dt_init_floor: float
    backend: str
    chunk: int
    bidirectional: bool
    checkpoint: bool

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"mamba.backend must be one of {BACKENDS}, got {self.backend!r}")

    def rank(self, d_model: int) -> int:
        return math.ceil(d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)


def flip_valid(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Reverse each line of x (B, L, ...) within its valid length (mask (B, L)); pads stay right."""
    if mask is None:
        return x.flip(1)
    B, L = mask.shape
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    pos = torch.arange(L, device=x.device)[None, :]
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos) + L * torch.arange(B, device=x.device)[:, None]
    # whole rows by one index_select over (B L, ...): several times faster than gather's per-element index
    return x.reshape(B * L, *x.shape[2:]).index_select(0, idx.reshape(-1)).view_as(x)


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """What ``conv1d`` (depthwise, padding K - 1, first L outputs) computes, x (B, L, E), weight
    (E, 1, K): K shifted multiply-adds (PyTorch's CPU backward of a depthwise conv is ~100x slower)."""
    K, L = weight.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))
    w = weight[:, 0, :]  # (E, K)
    y = xp[:, :L] * w[:, 0]
    for k in range(1, K):
        y = y + xp[:, k : k + L] * w[:, k]
    return y if bias is None else y + bias


class MambaLayer(nn.Module):
    """One selective-SSM layer, x (B, L, d_model) -> (B, L, d_model), parameters named as mamba-ssm's."""

    def __init__(self, d_model: int, config: MambaConfig):
        super().__init__()
        self.config = config
        d_inner = config.expand * d_model
        dt_rank = config.rank(d_model)
        self.d_inner, self.dt_rank, self.d_state = d_inner, dt_rank, config.d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner, padding=config.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * config.d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # mamba-ssm's init: dt weights uniform in +-dt_rank^-0.5, dt bias = softplus^-1 of a
        # log-uniform delta in [dt_min, dt_max]; A = 1..d_state per channel (S4D real)
        std = dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(d_inner) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        ).clamp(min=config.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, config.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, d_model), mask (B, L) True = valid -> (B, L, d_model); padded rows are zero."""
        if self.runs_fused(x):
            return self.forward_fused(x, mask)
        keep = None if mask is None else mask.unsqueeze(-1).to(x.dtype)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        if keep is not None:
            xs = xs * keep
        xs = F.silu(causal_depthwise_conv(xs, self.conv1d.weight, self.conv1d.bias))
        if keep is not None:
            xs = xs * keep
        dt, Bm, Cm = torch.split(self.x_proj(xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = softplus_delta(F.linear(dt, self.dt_proj.weight), self.dt_proj.bias)
        A = -torch.exp(self.A_log.float())
        y = selective_scan(xs, delta, A, Bm, Cm, self.D, backend=self.config.backend, chunk=self.config.chunk)
        out = self.out_proj(y * F.silu(z))
        return out if keep is None else out * keep

    def runs_fused(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the fused CPU kernels: the chunked backend, a CPU input,
        autograd recording nothing, the kernels built (:mod:`isdrama.models.blocks.cpu_kernels`)."""
        return (
            self.config.backend == "chunked"
            and x.device.type == "cpu"
            and not (torch.is_grad_enabled() and (x.requires_grad or self.in_proj.weight.requires_grad))
            and fused_kernels_available()
        )

    def forward_fused(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`forward` without autograd through the fused kernels (:func:`mamba_lines_fused`)."""
        return mamba_lines_fused([(self, False)], x, mask)


def mamba_lines_fused(
    layers: list[tuple[MambaLayer, bool]], x: torch.Tensor, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """The sum of Mamba layers' outputs, each (layer, reverse) reading every line forwards or
    backwards (reverse: what ``flip_valid(layer(flip_valid(x)))`` gives), without autograd through
    the fused CPU kernels, x (B, L, d_model), mask (B, L) pads on the right -> (B, L, d_model),
    zero on padded frames. The lines run packed without their padding (:class:`PackedLines`); one
    input projection and one output projection serve all the layers (weights concatenated):
    in_proj -> [causal depthwise conv, silu] -> x_proj / dt_proj -> [softplus, scan, D term,
    silu gate] -> out_proj."""
    B, L, _ = x.shape
    lines = PackedLines(mask, B, L)
    E = layers[0][0].d_inner
    xz = F.linear(lines.pack(x), torch.cat([layer.in_proj.weight for layer, _ in layers]))  # (R, 2 E n)
    y = torch.empty(lines.rows, E * len(layers), dtype=torch.float32)
    for i, (layer, reverse) in enumerate(layers):
        xs, z = xz[:, 2 * E * i : 2 * E * i + E], xz[:, 2 * E * i + E : 2 * E * (i + 1)]
        xs = conv_silu_lines(xs, layer.conv1d.weight, layer.conv1d.bias, lines, reverse).to(x.dtype)
        dt, Bm, Cm = torch.split(layer.x_proj(xs), [layer.dt_rank, layer.d_state, layer.d_state], dim=-1)
        A = -torch.exp(layer.A_log.float())
        delta = F.linear(dt, layer.dt_proj.weight)
        scan_lines(xs, delta, A, Bm, Cm, layer.D, layer.dt_proj.bias, z, lines, y[:, E * i : E * (i + 1)], reverse)
    out = F.linear(y.to(x.dtype), torch.cat([layer.out_proj.weight for layer, _ in layers], dim=1))
    return lines.unpack(out)


class BidirectionalMamba(nn.Module):
    """``forward_mamba`` over the sequence + ``backward_mamba`` over each line reversed (when
    ``config.bidirectional``), (B, L, D) -> (B, L, D)."""

    def __init__(self, d_model: int, config: MambaConfig):
        super().__init__()
        self.forward_mamba = MambaLayer(d_model, config)
        self.backward_mamba = MambaLayer(d_model, config) if config.bidirectional else None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        layers = [(self.forward_mamba, False)]
        if self.backward_mamba is not None:
            layers.append((self.backward_mamba, True))
        if all(layer.runs_fused(x) for layer, _ in layers):  # sampling on CPU: both directions in one fused pass
            return mamba_lines_fused(layers, x, mask)
        y = self.forward_mamba(x, mask)
        if self.backward_mamba is not None:
            y = y + flip_valid(self.backward_mamba(flip_valid(x, mask), mask), mask)
        return y


class MambaStack(nn.Module):
    """K pre-norm residual bidirectional Mamba layers: h = h + mamba_k(RMSNorm(h)); padded rows
    stay zero. Activation checkpointing per layer when ``config.checkpoint`` and training."""

    def __init__(self, d_model: int, n_layers: int, config: MambaConfig, eps: float):
        super().__init__()
        self.config = config
        self.norms = nn.ModuleList(nn.RMSNorm(d_model, eps=eps) for _ in range(n_layers))
        self.layers = nn.ModuleList(BidirectionalMamba(d_model, config) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for norm, layer in zip(self.norms, self.layers):
            if self.config.checkpoint and self.training and torch.is_grad_enabled():
                x = x + checkpoint(_run_layer, norm, layer, x, mask, use_reentrant=False)
            else:
                x = x + _run_layer(norm, layer, x, mask)
        return x


def _run_layer(norm: nn.Module, layer: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    return layer(norm(x), mask)


__all__ = ["MambaConfig", "MambaLayer", "BidirectionalMamba", "MambaStack", "flip_valid", "mamba_lines_fused"]
