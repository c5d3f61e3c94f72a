"""The Immersive Drama Transformer (IDT): the velocity field of the flow over binaural latents.

Input sequence per line: the speaker prompt's clean latent frames (prefix) followed by the
frames being generated, right-padded: ``[prompt (P_i) | target (T_i) | pad]``. Target frames get
``in_latent(x_t) + in_content(z_c) + in_pose(z_p)`` (+ ``in_prior(mu)`` with the content prior:
mu (B, T, C), a conv stack's prediction of the latent from the condition alone), prompt frames
``in_latent(prompt)``, each plus a learned type embedding. The global condition (AdaLN-Zero) is
timestep embedding + masked mean of the prompt (a learned null vector when the line has no prompt)
+ mean of the scene tokens (a learned null scene when there is none).

Blocks (``n_blocks``): [AdaLN -> K bidirectional Mamba layers] -> [AdaLN -> RoPE self-attention]
+ tanh-gated cross-attention to the scene -> [AdaLN -> Drama-MoE]; the first block's output feeds
the F0 head, whose prediction is embedded into the stream of the later blocks. A final AdaLN
layer (zero-initialised) maps to the latent width. Every block type can be switched off by
config (``mamba.enabled`` false: K pre-norm transformer layers instead, the "no Mamba" ablation).

Shapes: B lines, T target frames, P prompt frames, S scene tokens, C latent channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from isdrama.models.blocks.adaln import AdaLNZero, FinalLayer, TimestepEmbedding, modulate
from isdrama.models.blocks.attention import GatedCrossAttention, RoPESelfAttention
from isdrama.models.blocks.f0_head import F0Head
from isdrama.models.blocks.mamba import MambaConfig, MambaStack
from isdrama.models.blocks.moe import DramaMoE, MoEConfig
from isdrama.models.layers import ConvStack, FeedForward, masked_mean


@dataclass
class AttentionConfig:
    """Self-attention (``enabled``), RoPE base, dropout, cross-attention to the scene (``cross``);
    ``window``: None, full self-attention; an int, each frame attends to the frames within that
    many of it on each side (linear in L beyond it; the no-Mamba ablation's layers too)."""

    enabled: bool
    rope_base: float
    dropout: float
    cross: bool
    window: Optional[int]


@dataclass
class PriorConfig:
    """The content prior (not in the paper; the encoder prior of Grad-TTS / Matcha-TTS): ``blocks``
    residual conv blocks of ``kernel`` over the target frames' condition (content + pose + the
    prompt's global vector) predict the standardised latent (the drama stage's ``prior`` loss), and
    that prediction is embedded into the target frames' input. ``enabled`` false: none of it."""

    enabled: bool
    blocks: int
    kernel: int


@dataclass
class DramaTransformerConfig:
    """configs/model/transformer/*.yaml.

    latent_dim: channels of a binaural latent frame (2 x the codec's latent). content_dim /
    pose_dim: widths of z_c / z_p (the front end's). scene_dim: width of the scene tokens.
    d_model, n_blocks, n_heads: sizes. mamba_layers: Mamba layers per block (K).
    mamba_enabled: the Mamba sub-block (off: ``mamba_layers`` transformer layers of
    ``replacement_ff_mult``). f0_head: the first block's F0 prediction, log-F0 as log(f0 / f0_ref_hz).
    time_freq_dim /
    time_scale: timestep sinusoids. norm_eps: RMSNorm epsilon. prior: :class:`PriorConfig`.
    """

    latent_dim: int
    content_dim: int
    pose_dim: int
    scene_dim: int
    d_model: int
    n_blocks: int
    n_heads: int
    mamba_layers: int
    mamba_enabled: bool
    replacement_ff_mult: float
    mamba: MambaConfig
    attention: AttentionConfig
    moe: MoEConfig
    f0_head: bool
    f0_ref_hz: float
    time_freq_dim: int
    time_scale: float
    norm_eps: float
    prior: PriorConfig


class TransformerStack(nn.Module):
    """K pre-norm transformer layers (RoPE self-attention + FFN) with the Mamba stack's call signature."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, ff_mult: float, cfg: AttentionConfig, eps: float):
        super().__init__()
        self.norms = nn.ModuleList(nn.RMSNorm(d_model, eps=eps) for _ in range(2 * n_layers))
        self.attn = nn.ModuleList(
            RoPESelfAttention(d_model, n_heads, cfg.rope_base, cfg.dropout, cfg.window) for _ in range(n_layers)
        )
        self.ff = nn.ModuleList(
            FeedForward(d_model, int(d_model * ff_mult), dropout=cfg.dropout) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for i, (attn, ff) in enumerate(zip(self.attn, self.ff)):
            x = x + attn(self.norms[2 * i](x), mask)
            x = x + ff(self.norms[2 * i + 1](x))
        return x


class DramaBlock(nn.Module):
    """[AdaLN -> Mamba x K] -> [AdaLN -> self-attention] + gated scene cross-attention -> [AdaLN -> Drama-MoE]."""

    def __init__(self, cfg: DramaTransformerConfig):
        super().__init__()
        d, eps = cfg.d_model, cfg.norm_eps
        self.adaln = AdaLNZero(d, d, 3)
        self.norms = nn.ModuleList(nn.RMSNorm(d, eps=eps, elementwise_affine=False) for _ in range(3))
        if cfg.mamba_layers > 0 and cfg.mamba_enabled:
            self.sequence = MambaStack(d, cfg.mamba_layers, cfg.mamba, eps)
        elif cfg.mamba_layers > 0:
            self.sequence = TransformerStack(
                d, cfg.mamba_layers, cfg.n_heads, cfg.replacement_ff_mult, cfg.attention, eps
            )
        else:
            self.sequence = None
        att = cfg.attention
        self.self_attn = (
            RoPESelfAttention(d, cfg.n_heads, att.rope_base, att.dropout, att.window) if att.enabled else None
        )
        self.cross_attn = GatedCrossAttention(d, d, cfg.n_heads, att.dropout, eps) if att.cross else None
        self.moe = DramaMoE(d, cfg.moe)

    def router_input(self, ctx: dict[str, Any]) -> Optional[torch.Tensor]:
        """The Drama-MoE's prosodic router input (B, L, d) from the condition context (or None)."""
        return self.moe.prosodic_router_input(ctx["content_pose"], ctx["prompt"], ctx["prompt_mask"])

    def forward(
        self,
        h: torch.Tensor,
        cond: torch.Tensor,
        ctx: dict[str, Any],
        temperature: float,
        router_input: Optional[torch.Tensor],
        dispatch: Optional[dict[str, list[torch.Tensor]]] = None,
        targets: Optional[torch.Tensor] = None,
    ):
        """h (B, L, d), cond (B, d); ``router_input``: :meth:`router_input` of ``ctx`` (part of
        :meth:`DramaTransformer.condition`; None when the prosodic group is not routed);
        ``dispatch``: the Drama-MoE's precomputed eval routing (:meth:`DramaMoE.dispatch`) or None.
        ``targets``: target positions (B, T) (with a dispatch over them): the per-frame tail after
        the sequence mixing (cross-attention, Drama-MoE) runs on those frames only and the block
        returns (B, T, d) (the last block in sampling: nothing reads its prompt frames)."""
        mask = ctx["mask"]
        (s1, c1, g1), (s2, c2, g2), (s3, c3, g3) = self.adaln(cond)
        if self.sequence is not None:
            h = h + g1[:, None] * self.sequence(modulate(self.norms[0](h), s1, c1), mask)
        if self.self_attn is not None:
            h = h + g2[:, None] * self.self_attn(modulate(self.norms[1](h), s2, c2), mask)
        pose = ctx["pose"]
        if targets is not None:
            if dispatch is None:
                raise ValueError("a block's tail on the target frames needs their precomputed dispatch")
            h, mask = gather_rows(h, targets), targets < mask.shape[1]
            router_input, pose = None, None  # the routers' inputs: the precomputed dispatch replaces them
        if self.cross_attn is not None:
            h = self.cross_attn(h, ctx["scene"], ctx["scene_mask"])
        h_moe = modulate(self.norms[2](h), s3, c3)
        out, stats = self.moe(h_moe, mask, router_input, pose, temperature, dispatch)
        return h + g3[:, None] * out, stats


def pack_prefix(prompt_mask: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of ``[prompt | target]`` packed per line without interior padding.

    prompt_mask (B, P), frame_mask (B, T) (both right-padded). Returns prompt_pos (B, P) and
    target_pos (B, T) positions in the packed sequence (padded entries point at the last slot,
    ``L``, a scratch slot dropped after scattering) and the packed mask (B, L).
    """
    p_len = prompt_mask.sum(dim=1)
    t_len = frame_mask.sum(dim=1)
    L = int((p_len + t_len).max().item()) if prompt_mask.shape[0] else 0
    P, T = prompt_mask.shape[1], frame_mask.shape[1]
    ar_p = torch.arange(P, device=prompt_mask.device)[None]
    ar_t = torch.arange(T, device=frame_mask.device)[None]
    prompt_pos = torch.where(
        prompt_mask, ar_p.expand_as(prompt_mask), torch.full_like(prompt_mask, L, dtype=torch.long)
    )
    target_pos = torch.where(frame_mask, p_len[:, None] + ar_t, torch.full_like(frame_mask, L, dtype=torch.long))
    packed_mask = torch.arange(L, device=frame_mask.device)[None] < (p_len + t_len)[:, None]
    return prompt_pos, target_pos, packed_mask


def scatter_rows(L: int, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum of (values (B, N, D), positions (B, N)) scattered into (B, L, D); positions == L are dropped."""
    values0 = parts[0][0]
    out = values0.new_zeros(values0.shape[0], L + 1, values0.shape[-1])
    for values, pos in parts:
        out = out.scatter_add(1, pos.unsqueeze(-1).expand(-1, -1, values.shape[-1]), values)
    return out[:, :L]


def gather_rows(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) at positions pos (B, N) (positions == L give zeros) -> (B, N, D)."""
    padded = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[-1])], dim=1)
    return padded.gather(1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class DramaTransformer(nn.Module):
    """Velocity field v(x_t, t | prompt, z_c, z_p, scene) over binaural latents (see module docstring)."""

    def __init__(self, config: DramaTransformerConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.d_model
        self.in_latent = nn.Linear(cfg.latent_dim, d)
        self.in_content = nn.Linear(cfg.content_dim, d)
        self.in_pose = nn.Linear(cfg.pose_dim, d)
        self.type_embedding = nn.Embedding(2, d)  # 0 = prompt frame, 1 = generated frame
        self.time_embedding = TimestepEmbedding(d, cfg.time_freq_dim, cfg.time_scale)
        self.prompt_global = nn.Linear(cfg.latent_dim, d)
        self.null_prompt = nn.Parameter(torch.zeros(d))
        self.scene_in = nn.Linear(cfg.scene_dim, d)
        self.null_scene = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = nn.ModuleList(DramaBlock(cfg) for _ in range(cfg.n_blocks))
        self.f0_head = F0Head(d, cfg.norm_eps) if cfg.f0_head else None
        self.final = FinalLayer(d, d, cfg.latent_dim, cfg.norm_eps)
        self.prior = None
        if cfg.prior.enabled:
            self.prior_norm = nn.RMSNorm(d, eps=cfg.norm_eps)
            self.prior = ConvStack(d, d, n_blocks=cfg.prior.blocks, kernel_size=cfg.prior.kernel, dropout=0.0)
            self.prior_out = nn.Linear(d, cfg.latent_dim)
            self.in_prior = nn.Linear(cfg.latent_dim, d)

    def scene_tokens(
        self, scene: Optional[torch.Tensor], scene_mask: Optional[torch.Tensor], batch: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, d) scene tokens and mask; lines without a scene get the learned null scene token."""
        null = self.null_scene.expand(batch, 1, -1)
        if scene is None:
            return null, torch.ones(batch, 1, dtype=torch.bool, device=device)
        tokens = self.scene_in(scene)
        mask = scene_mask if scene_mask is not None else torch.ones(scene.shape[:2], dtype=torch.bool, device=device)
        has = mask.any(dim=1)
        tokens = torch.cat([tokens, null], dim=1)
        mask = torch.cat([mask, ~has[:, None]], dim=1)  # the null token only where the line has no scene
        return tokens, mask

    def condition(
        self,
        frame_mask: torch.Tensor,
        z_c: torch.Tensor,
        z_p: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        scene: Optional[torch.Tensor] = None,
        scene_mask: Optional[torch.Tensor] = None,
        temperature: float = 1.0,
        precompute_routing: bool = True,
    ) -> dict[str, Any]:
        """The part of :meth:`forward` that depends on neither x_t nor t: the packing, the prompt,
        content and pose embeddings, the content prior's prediction (``prior``, (B, T, C) or
        None), the prompt / scene part of the global condition, each block's prosodic router input
        and, in eval mode with ``precompute_routing``, each block's top-1 expert routing (both
        routers read condition-only inputs). The sampler computes it once for all Euler steps
        (:meth:`isdrama.flow.RectifiedFlow.sample`) and passes it back as ``condition``; the
        forward then returns no routing stats for the precomputed groups. ``temperature`` is
        accepted (the estimator's keywords) and unused: it applies per call."""
        B = frame_mask.shape[0]
        prompt_pos, target_pos, mask = pack_prefix(prompt_mask, frame_mask)
        L = mask.shape[1]
        content = self.in_content(z_c)
        pose = self.in_pose(z_p)
        has_prompt = prompt_mask.any(dim=1)
        prompt_vec = (
            self.prompt_global(masked_mean(prompt, prompt_mask)) if prompt.shape[1] else self.null_prompt.expand(B, -1)
        )
        global_cond = torch.where(has_prompt[:, None], prompt_vec, self.null_prompt.expand(B, -1))
        scene_tok, scene_tok_mask = self.scene_tokens(scene, scene_mask, B, frame_mask.device)
        target_cond = content + pose + self.type_embedding.weight[1]
        prior = None
        if self.prior is not None:
            prior_in = self.prior_norm(content + pose + global_cond[:, None])
            prior = self.prior_out(self.prior(prior_in, frame_mask)) * frame_mask.unsqueeze(-1).to(content.dtype)
            target_cond = target_cond + self.in_prior(prior)
        ctx = {
            "mask": mask,
            "content_pose": scatter_rows(L, [(content + pose, target_pos)]),
            "pose": scatter_rows(L, [(pose, target_pos)]),
            "prompt": self.in_latent(prompt) + self.type_embedding.weight[0],
            "prompt_mask": prompt_mask,
            "scene": scene_tok,
            "scene_mask": scene_tok_mask,
        }
        routers = [block.router_input(ctx) for block in self.blocks]
        return {
            "prompt_pos": prompt_pos,
            "target_pos": target_pos,
            "target_cond": target_cond,  # (B, T, d)
            "prior": prior,  # (B, T, C) or None
            "global": global_cond + masked_mean(scene_tok, scene_tok_mask),  # (B, d)
            "ctx": ctx,
            "routers": routers,
            "dispatch": None
            if self.training or not precompute_routing
            else self.eval_dispatch(ctx, routers, target_pos),
        }

    def eval_dispatch(
        self, ctx: dict[str, Any], routers: list[Optional[torch.Tensor]], target_pos: torch.Tensor
    ) -> list[dict[str, list[torch.Tensor]]]:
        """Each block's top-1 Drama-MoE routing over its packed frames; the last block's over the
        target frames only (its tail runs on them in :meth:`forward`)."""
        pose, mask = ctx["pose"], ctx["mask"]
        out = [block.moe.dispatch(r, pose, mask) for block, r in zip(self.blocks[:-1], routers)]
        last = routers[-1]
        last = None if last is None else gather_rows(last, target_pos)
        out.append(self.blocks[-1].moe.dispatch(last, gather_rows(pose, target_pos), target_pos < mask.shape[1]))
        return out

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        frame_mask: torch.Tensor,
        z_c: torch.Tensor,
        z_p: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        scene: Optional[torch.Tensor] = None,
        scene_mask: Optional[torch.Tensor] = None,
        temperature: float = 1.0,
        condition: Optional[dict[str, Any]] = None,
    ) -> dict[str, Any]:
        """Velocity of the target frames.

        Args:
            x_t: (B, T, C) noised (standardised) latents; frame_mask (B, T).
            t: (B,) flow time in [0, 1].
            z_c, z_p: (B, T, D_c), (B, T, D_p) content and pose conditioning.
            prompt, prompt_mask: (B, P, C) clean standardised prompt latents and (B, P) mask
                (a row without valid frames = no prompt; P may be 0).
            scene, scene_mask: (B, S, D_s) scene tokens and (B, S) mask, or None.
            temperature: Gumbel-softmax temperature of the routers (training).
            condition: :meth:`condition` of these same inputs, computed once (sampling), or None.

        Returns ``velocity`` (B, T, C), ``f0`` (B, T, 4) or None, ``prior`` (B, T, C) (the
        content prior's latent, zero at padding) or None, ``routing``: one dict per
        block of group -> stats (:class:`~isdrama.models.blocks.moe.ExpertGroup`), with the
        ``packed_mask`` (B, L) and ``target_pos`` (B, T) the stats' frames refer to.
        """
        if condition is None:  # training / validation: routing stats from this call
            condition = self.condition(
                frame_mask, z_c, z_p, prompt, prompt_mask, scene, scene_mask, precompute_routing=False
            )
        ctx, target_pos = condition["ctx"], condition["target_pos"]
        L = ctx["mask"].shape[1]
        target_h = self.in_latent(x_t) + condition["target_cond"]
        h = scatter_rows(L, [(ctx["prompt"], condition["prompt_pos"]), (target_h, target_pos)])
        cond = self.time_embedding(t) + condition["global"]
        routing, f0 = [], None
        sampling = condition["dispatch"] is not None
        dispatches = condition["dispatch"] if sampling else [None] * len(self.blocks)
        last = len(self.blocks) - 1
        for i, (block, router_input, dispatch) in enumerate(zip(self.blocks, condition["routers"], dispatches)):
            # sampling: the last block's per-frame tail on the target frames only (h becomes (B, T, d))
            targets = target_pos if (sampling and i == last) else None
            h, stats = block(h, cond, ctx, temperature, router_input, dispatch, targets)
            routing.append(stats)
            if i == 0 and self.f0_head is not None:
                f0_packed, h = self.f0_head(h)
                f0 = f0_packed * frame_mask.unsqueeze(-1) if targets is not None else gather_rows(f0_packed, target_pos)
        if not sampling:
            h = gather_rows(h, target_pos)
        # the final layer is per frame: on the target frames only, padded ones zero as the loss expects
        velocity = self.final(h, cond) * frame_mask.unsqueeze(-1).to(h.dtype)
        mask = ctx["mask"]
        return {
            "velocity": velocity,
            "f0": f0,
            "prior": condition["prior"],
            "routing": routing,
            "packed_mask": mask,
            "target_pos": target_pos,
        }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "DramaTransformer",
    "DramaTransformerConfig",
    "AttentionConfig",
    "PriorConfig",
    "pack_prefix",
    "count_parameters",
]
