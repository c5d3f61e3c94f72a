"""Drama-MoE: FAN experts in a prosodic then a spatial group, per-frame Gumbel-softmax routing.

- :class:`FANExpert`: a FAN layer [cos(W_p x) || sin(W_p x) || act(B + W x)] (Fourier Analysis
  Networks; a share ``p`` of the width is periodic, p = 0.25) -> linear back to d_model.
  :class:`LinearExpert` is the "FAN -> linear" ablation (linear -> act -> linear, same widths).
- :class:`ExpertGroup`: ``n_experts`` experts and a router. Training: per-frame Gumbel-softmax
  weights over all experts (dense: every expert gets a gradient on every rank, so no DDP rank
  leaves one without), computed in fp32 with clamped uniform noise of its own (torch's
  ``gumbel_softmax`` has produced NaNs); eval: deterministic top-1 of the router logits, each
  frame through its one expert. Switch load-balancing loss N * sum_i f_i * P_i over valid frames
  (f_i: share of frames whose top choice is i, P_i: mean router probability).
- :class:`DramaMoE`: the prosodic group (router: cross-attention from the content / pose stream
  to the prompt) then the spatial group (router: z_p). A group switched off is one expert, no
  router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from isdrama.models.blocks.attention import CrossAttention

EXPERT_KINDS = ("fan", "linear")


@dataclass
class MoEConfig:
    """Drama-MoE settings (``model.transformer.moe``).

    enabled: the MoE sub-block (off: one expert, the "no Drama-MoE" ablation). prosodic / spatial:
    each group on (routed) or off (one expert). n_experts: per group. expert: ``fan`` | ``linear``.
    ff_dim: expert hidden width. fan_p: periodic share of a FAN layer. router_heads: heads of the
    prosodic router's cross-attention. noise_eps: clamp of the Gumbel noise's uniform draw.
    """

    enabled: bool
    prosodic: bool
    spatial: bool
    n_experts: int
    expert: str
    ff_dim: int
    fan_p: float
    router_heads: int
    noise_eps: float

    def __post_init__(self) -> None:
        if self.expert not in EXPERT_KINDS:
            raise ValueError(f"moe.expert must be one of {EXPERT_KINDS}, got {self.expert!r}")
        if not 0.0 < self.fan_p < 0.5:
            raise ValueError(f"moe.fan_p must be in (0, 0.5), got {self.fan_p}")


class FANExpert(nn.Module):
    """FAN layer d -> ff_dim ([cos || sin || gelu] with a periodic share p) -> linear -> d."""

    def __init__(self, d_model: int, ff_dim: int, p: float):
        super().__init__()
        self.d_periodic = max(1, int(round(ff_dim * p)))
        self.periodic = nn.Linear(d_model, self.d_periodic, bias=False)
        self.aperiodic = nn.Linear(d_model, ff_dim - 2 * self.d_periodic)
        self.out = nn.Linear(ff_dim, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.periodic(x)
        return self.out(torch.cat([torch.cos(p), torch.sin(p), F.gelu(self.aperiodic(x))], dim=-1))


class LinearExpert(nn.Module):
    """linear d -> ff_dim -> gelu -> linear -> d (the FAN -> linear ablation)."""

    def __init__(self, d_model: int, ff_dim: int):
        super().__init__()
        self.inner = nn.Linear(d_model, ff_dim)
        self.out = nn.Linear(ff_dim, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.inner(x)))


def make_expert(d_model: int, config: MoEConfig) -> nn.Module:
    if config.expert == "fan":
        return FANExpert(d_model, config.ff_dim, config.fan_p)
    return LinearExpert(d_model, config.ff_dim)


def gumbel_softmax_fp32(logits: torch.Tensor, temperature: float, eps: float) -> torch.Tensor:
    """softmax((logits + g) / temperature) in fp32, g = -log(-log(u)) with u clamped to [eps, 1 - eps]."""
    u = torch.rand(logits.shape, device=logits.device, dtype=torch.float32).clamp(eps, 1.0 - eps)
    g = -torch.log(-torch.log(u))
    return torch.softmax((logits.float() + g) / temperature, dim=-1)


def switch_balance_loss(probs: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """N * sum_i f_i * P_i over valid frames of router probabilities (B, L, N)."""
    n = probs.shape[-1]
    p = probs.reshape(-1, n)
    if mask is not None:
        p = p[mask.reshape(-1)]
    if p.shape[0] == 0:
        return probs.sum() * 0.0
    f = F.one_hot(p.argmax(dim=-1), n).float().mean(dim=0)
    return n * torch.sum(f * p.mean(dim=0))


class ExpertGroup(nn.Module):
    """``n_experts`` experts + a linear router on a router input (B, L, R); one expert when not routed."""

    def __init__(self, d_model: int, router_dim: int, config: MoEConfig, routed: bool):
        super().__init__()
        self.config = config
        n = config.n_experts if routed else 1
        self.experts = nn.ModuleList(make_expert(d_model, config) for _ in range(n))
        self.router = nn.Linear(router_dim, n) if routed else None

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def dispatch(self, router_input: torch.Tensor, mask: Optional[torch.Tensor]) -> list[torch.Tensor]:
        """The eval-time top-1 routing as frame indices into (B L) per expert (valid frames only).
        The router input is condition-only, so a sampler computes this once for all steps."""
        choice = self.router(router_input).argmax(dim=-1).reshape(-1)
        if mask is not None:
            choice = choice.masked_fill(~mask.reshape(-1), -1)
        return [(choice == i).nonzero().flatten() for i in range(self.n_experts)]

    def forward(
        self,
        x: torch.Tensor,
        router_input: Optional[torch.Tensor],
        mask: Optional[torch.Tensor],
        temperature: float,
        dispatch: Optional[list[torch.Tensor]] = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, L, D) -> (B, L, D) and routing stats: ``balance`` (scalar), ``probs`` (B, L, N)
        router probabilities, ``choice`` (B, L) top-1 expert (empty dict when not routed).
        ``dispatch``: :meth:`dispatch` of this router input, precomputed (eval only; no stats)."""
        if self.router is None:
            return self.experts[0](x), {}
        if dispatch is not None:
            if self.training:
                raise ValueError("a precomputed dispatch is top-1 routing: eval mode only")
            return self.run_dispatch(x, dispatch), {}
        logits = self.router(router_input).float()
        probs = torch.softmax(logits, dim=-1)
        choice = logits.argmax(dim=-1)
        stats = {"balance": switch_balance_loss(probs, mask), "probs": probs.detach(), "choice": choice.detach()}
        if self.training:
            weights = gumbel_softmax_fp32(logits, temperature, self.config.noise_eps).to(x.dtype)
            y = sum(weights[..., i : i + 1] * expert(x) for i, expert in enumerate(self.experts))
            return y, stats
        return self.run_dispatch(x, self.dispatch(router_input, mask)), stats

    def run_dispatch(self, x: torch.Tensor, dispatch: list[torch.Tensor]) -> torch.Tensor:
        """Each expert on its frames of x (B, L, D) (top-1, unweighted); frames of no expert (padding) are 0."""
        y = x.new_zeros(x.shape)
        flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.view(-1, x.shape[-1])
        for idx, expert in zip(dispatch, self.experts):
            if idx.numel():
                flat_y.index_copy_(0, idx, expert(flat_x.index_select(0, idx)).to(y.dtype))
        return y


class DramaMoE(nn.Module):
    """Prosodic group then spatial group on h (B, L, D): out = p + s, p = prosodic(h),
    s = spatial(h + p). Routers: prosodic from CrossAttention(content/pose stream -> prompt
    stream), spatial from the pose stream."""

    def __init__(self, d_model: int, config: MoEConfig):
        super().__init__()
        self.config = config
        routed = config.enabled
        self.prosodic_router_attn = (
            CrossAttention(d_model, d_model, config.router_heads, 0.0) if routed and config.prosodic else None
        )
        self.prosodic = ExpertGroup(d_model, d_model, config, routed=routed and config.prosodic)
        self.spatial = ExpertGroup(d_model, d_model, config, routed=routed and config.spatial) if routed else None

    def prosodic_router_input(
        self, content_pose: torch.Tensor, prompt: torch.Tensor, prompt_mask: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """The prosodic router's input: CrossAttention(content/pose stream (B, L, D) -> prompt
        stream (B, P, D), mask (B, P)) -> (B, L, D); None when the group is not routed. It depends
        on the conditions only, so a sampler computes it once for all steps."""
        if self.prosodic_router_attn is None:
            return None
        return self.prosodic_router_attn(content_pose, prompt, prompt_mask)

    def dispatch(
        self, router_p: Optional[torch.Tensor], pose: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> dict[str, list[torch.Tensor]]:
        """Each routed group's eval-time top-1 :meth:`ExpertGroup.dispatch`: both routers read
        condition-only inputs (the prosodic router input, the pose stream), so a sampler computes
        the routing once for all steps."""
        out = {}
        if self.prosodic.router is not None:
            out["prosodic"] = self.prosodic.dispatch(router_p, mask)
        if self.spatial is not None and self.spatial.router is not None:
            out["spatial"] = self.spatial.dispatch(pose, mask)
        return out

    def forward(
        self,
        h: torch.Tensor,
        mask: Optional[torch.Tensor],
        router_p: Optional[torch.Tensor],
        pose: Optional[torch.Tensor],
        temperature: float,
        dispatch: Optional[dict[str, list[torch.Tensor]]] = None,
    ) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        """h, pose (B, L, D); ``router_p``: :meth:`prosodic_router_input` (B, L, D) or None when
        the prosodic group is not routed; ``dispatch``: :meth:`dispatch` of these inputs,
        precomputed (eval), or None (a group with a dispatch reads neither router input). Returns
        the output (B, L, D) and the routing stats per group (``prosodic`` / ``spatial``; none for
        a group run from a precomputed dispatch)."""
        dispatch = dispatch or {}
        if self.prosodic_router_attn is not None and router_p is None and "prosodic" not in dispatch:
            raise ValueError("the prosodic group is routed: pass router_p = prosodic_router_input(...)")
        p, stats_p = self.prosodic(h, router_p, mask, temperature, dispatch.get("prosodic"))
        stats = {"prosodic": stats_p} if stats_p else {}
        if self.spatial is None:
            return p, stats
        s, stats_s = self.spatial(h + p, pose, mask, temperature, dispatch.get("spatial"))
        if stats_s:
            stats["spatial"] = stats_s
        return p + s, stats


__all__ = [
    "MoEConfig",
    "FANExpert",
    "LinearExpert",
    "ExpertGroup",
    "DramaMoE",
    "gumbel_softmax_fp32",
    "switch_balance_loss",
]
