"""The one code path from conditions to generated latents, shared by the drama stage's validation
(:meth:`isdrama.lit.drama.DramaModule.generate_latents`) and inference
(:class:`isdrama.inference.generator.DramaGenerator`).

Guidance (all branches in one batched estimator call, :meth:`RectifiedFlow.sample`):

- ``scale == 1``: the conditional field alone;
- no previous line: classifier-free guidance, g v(x | prompt) + (1 - g) v(x | no prompt);
  with ``drop_content`` (a model trained with ``model.prompt.content_drop`` > 0) the unconditional
  branch has neither prompt nor content (z_c zeroed), so g also amplifies what is said;
- with the previous generated line of the same speaker: ISDrama's context-consistent guidance
  (eq. 5), g a v(x | prompt) + g (1 - a) v(x | previous line) + (1 - g) v(x | no prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from isdrama.flow import GuidanceBranch, RectifiedFlow, cfg_branches, context_consistent_branches


@dataclass(frozen=True)
class Guidance:
    """Euler ``steps``, guidance ``scale`` g and ``alpha`` a (the own prompt's share against the
    previous line's in context-consistent guidance)."""

    steps: int
    scale: float
    alpha: float

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"guidance steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"guidance alpha must be in [0, 1], got {self.alpha}")


def guidance_branches(
    cond: Mapping[str, Any],
    scale: float,
    alpha: float,
    previous: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    drop_content: bool = False,
) -> list[GuidanceBranch]:
    """The guidance terms of ``cond`` (estimator keywords with ``prompt`` / ``prompt_mask`` / ``z_c``);
    ``previous``: (B, P', C) standardised latents of the previous line and their mask (B, P');
    ``drop_content``: the unconditional branch's z_c is zeroed too."""
    if scale == 1.0 and previous is None:
        return [GuidanceBranch(1.0, cond)]
    uncond = dict(cond, prompt_mask=torch.zeros_like(cond["prompt_mask"]))
    if drop_content:
        uncond["z_c"] = torch.zeros_like(cond["z_c"])
    if previous is None:
        return cfg_branches(cond, uncond, scale)
    prev = dict(cond, prompt=previous[0], prompt_mask=previous[1])
    return context_consistent_branches(cond, prev, uncond, scale, alpha)


@torch.no_grad()
def sample_latents(
    flow: RectifiedFlow,
    frame_mask: torch.Tensor,
    cond: Mapping[str, Any],
    guidance: Guidance,
    seed: int,
    previous: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    drop_content: bool = False,
) -> torch.Tensor:
    """Raw (de-standardised) binaural latents (B, T, C) of B lines, zero on padded frames
    (``previous``, ``drop_content``: :func:`guidance_branches`)."""
    branches = guidance_branches(cond, guidance.scale, guidance.alpha, previous, drop_content)
    x = flow.sample(frame_mask, branches, steps=guidance.steps, seed=seed)
    return flow.denormalize(x) * frame_mask.unsqueeze(-1)


@torch.no_grad()
def quantize_latents(codec, latents: torch.Tensor) -> torch.Tensor:
    """Raw latents (B, T, C) -> the codec's tokens (B, 2, n_q, T): generated latents snapped to its
    codebooks, as the tokens trained on."""
    return codec.quantize(latents.transpose(1, 2))


@torch.no_grad()
def decode_latents(codec, latents: torch.Tensor) -> torch.Tensor:
    """Raw latents (B, T, C) -> binaural audio (B, 2, T * hop) at ``codec.sample_rate``, through the
    codec's quantiser (:func:`quantize_latents`)."""
    return codec.decode(quantize_latents(codec, latents))


__all__ = ["Guidance", "decode_latents", "guidance_branches", "quantize_latents", "sample_latents"]
