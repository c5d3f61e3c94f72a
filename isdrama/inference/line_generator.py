"""The one code path from conditions to generated latents, shared by the drama stage's validation
(:meth:`isdrama.lit.drama.DramaModule.generate_latents`) and inference
(:class:`isdrama.inference.generator.DramaGenerator`).

Guidance (all branches in one batched estimator call, :meth:`RectifiedFlow.sample`; c = content,
p = the line's prompt, prev = the previous generated line of the same speaker, g_c = the content's
guidance scale):

    g a v(x | c, p) + g (1 - a) v(x | c, prev) + (g_c - g) v(x | c) + (1 - g_c) v(x | nothing)

- a model trained with the paper's unconditional branch (no prompt, the content kept) has
  g_c = 1: classifier-free guidance g v(x | c, p) + (1 - g) v(x | c) without a previous line, and
  ISDrama's context-consistent guidance (eq. 5) with one;
- a model trained to drop the content with the prompt (``model.prompt.content_drop`` > 0,
  ``drop_content``) guides the words too: g_c = g (the default) is one direction for voice and
  words, g v(x | c, p) + (1 - g) v(x | nothing); another g_c separates them (InstructPix2Pix's two
  scales), the voice's direction v(c, p) - v(c) scaled by g and the words' v(c) - v(nothing) by g_c;
- ``scale == 1`` with g_c = 1 and no previous line: the conditional field alone. Terms of weight
  0 are left out of the batch (:func:`isdrama.flow.guidance_terms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from isdrama.flow import GuidanceBranch, RectifiedFlow, guidance_terms


@dataclass(frozen=True)
class Guidance:
    """Euler ``steps``, guidance ``scale`` g, ``alpha`` a (the own prompt's share against the
    previous line's in context-consistent guidance) and ``content_scale`` g_c (None: g; used only
    by a model that drops the content, see the module docstring)."""

    steps: int
    scale: float
    alpha: float
    content_scale: Optional[float]

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
    content_scale: Optional[float] = None,
    drop_pose: bool = False,
) -> list[GuidanceBranch]:
    """The guidance terms of ``cond`` (estimator keywords with ``prompt`` / ``prompt_mask`` / ``z_c``;
    see the module docstring). ``previous``: (B, P', C) standardised latents of the previous line
    and their mask (B, P'); ``drop_content``: the model was trained with content-dropped lines, so
    its z_c zeroed is the unconditional branch; ``content_scale``: g_c (None: g; without
    ``drop_content`` it must be None or 1); ``drop_pose``: that branch's z_p is zeroed too (a model
    trained with ``model.prompt.drop_pose_with_content``)."""
    if not drop_content:
        if content_scale not in (None, 1.0):
            raise ValueError(
                f"a content guidance scale ({content_scale}) needs a model trained to drop the content "
                "(model.prompt.content_drop > 0); this one guides against v(x | no prompt) only"
            )
        content_scale = 1.0
    g_c = scale if content_scale is None else float(content_scale)
    no_prompt = dict(cond, prompt_mask=torch.zeros_like(cond["prompt_mask"]))
    prev = None if previous is None else dict(cond, prompt=previous[0], prompt_mask=previous[1])
    nothing = None
    if drop_content:
        nothing = dict(no_prompt, z_c=torch.zeros_like(cond["z_c"]))
        if drop_pose:
            nothing["z_p"] = torch.zeros_like(cond["z_p"])
    return guidance_terms(cond, no_prompt, scale, prev, alpha, nothing, g_c)


@torch.no_grad()
def sample_latents(
    flow: RectifiedFlow,
    frame_mask: torch.Tensor,
    cond: Mapping[str, Any],
    guidance: Guidance,
    seed: int,
    previous: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    drop_content: bool = False,
    drop_pose: bool = False,
) -> torch.Tensor:
    """Raw (de-standardised) binaural latents (B, T, C) of B lines, zero on padded frames
    (``previous``, ``drop_content``, ``drop_pose``: :func:`guidance_branches`)."""
    branches = guidance_branches(
        cond, guidance.scale, guidance.alpha, previous, drop_content, guidance.content_scale, drop_pose
    )
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
