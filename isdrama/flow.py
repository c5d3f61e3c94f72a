"""Rectified flow over standardised binaural latents: the training loss, the Euler sampler and
classifier-free / context-consistent guidance. No Lightning, no batch classes: tensors in.

- x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I), x_1 the standardised target latent; the estimator
  predicts the velocity x_1 - x_0; the loss is the mean squared error over generated frames
  (the prompt prefix is not part of the target; padding is masked).
- Standardisation: per-channel mean / std of the training set's latents, buffers of
  :class:`RectifiedFlow` (saved in checkpoints), fitted with :meth:`RectifiedFlow.fit_statistics`.
- Euler sampler on a time grid of ``steps`` intervals, optionally sway-warped (F5-TTS:
  t + s (cos(pi t / 2) - 1 + t), s < 0 spends more steps near the noise).
- Guidance: any weighted sum of conditional fields sum_k w_k v(x | cond_k), all branches in ONE
  batched estimator call. :func:`guidance_terms`: CFG g v(x | c) + (1 - g) v(x | no prompt),
  context-consistent guidance (ISDrama eq. 5) g a v(x | prompt) + g (1 - a) v(x | previous line of
  the speaker) + (1 - g) v(x | no prompt), and either against a branch without prompt and content,
  with the content's own scale.

The estimator is any module called as ``estimator(x_t=..., t=..., frame_mask=..., **cond)``
returning a dict with ``velocity`` (B, T, C) (e.g. :class:`~isdrama.models.drama_transformer.DramaTransformer`).
One that also has ``condition(frame_mask=..., **cond)`` (the work that depends on neither x_t
nor t) gets it computed once per sampling and passed back as ``condition=...``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass
class FlowConfig:
    """configs/model/flow/*.yaml.

    steps: Euler steps at inference (paper: 25). sway: sway coefficient of the time grid (null =
    uniform grid). guidance_scale (g) and context_alpha (a) of the guidance (paper: 3, 0.4).
    content_guidance_scale (g_c): the content's own guidance scale for a model whose unconditional
    branch drops the content too (``model.prompt.content_drop``; null = g; see
    :func:`isdrama.inference.line_generator.guidance_branches`).
    time_sampling: training times ``uniform`` or ``logit_normal`` (SD3). std_floor: lower bound of
    the per-channel std used to standardise.
    """

    steps: int
    sway: Optional[float]
    guidance_scale: float
    context_alpha: float
    content_guidance_scale: Optional[float]
    time_sampling: str
    std_floor: float

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"model.flow.steps must be >= 1, got {self.steps}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"model.flow.time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")


@dataclass
class GuidanceBranch:
    """One term w * v(x | cond) of a guided velocity; ``cond`` are the estimator's keyword tensors."""

    weight: float
    cond: Mapping[str, Any]


def guidance_terms(
    cond: Mapping[str, Any],
    no_prompt: Mapping[str, Any],
    scale: float,
    previous: Optional[Mapping[str, Any]] = None,
    alpha: float = 1.0,
    nothing: Optional[Mapping[str, Any]] = None,
    content_scale: float = 1.0,
) -> list[GuidanceBranch]:
    """The terms of a guided velocity, g = ``scale``, a = ``alpha``, g_c = ``content_scale``:

        g a v(x | cond) + g (1 - a) v(x | previous) + (g_c - g) v(x | no_prompt) + (1 - g_c) v(x | nothing)

    - g_c = 1 (``nothing`` unused): classifier-free guidance g v(x | cond) + (1 - g) v(x | no prompt)
      without ``previous`` (a = 1), ISDrama's context-consistent guidance (eq. 5) with it;
    - g_c = g: the same against ``nothing`` (no prompt and no content);
    - else two directions (InstructPix2Pix's two scales): the voice's, cond - no_prompt, scaled by g,
      the content's, no_prompt - nothing, by g_c.

    Terms of weight 0 are left out (g = 1 without ``previous``: the conditional field alone)."""
    a = alpha if previous is not None else 1.0
    terms = [(scale * a, cond)]
    if previous is not None:
        terms.append((scale * (1.0 - a), previous))
    terms.append((content_scale - scale, no_prompt))
    if content_scale != 1.0:
        if nothing is None:
            raise ValueError(f"a content scale of {content_scale} needs the branch without prompt and content")
        terms.append((1.0 - content_scale, nothing))
    return [GuidanceBranch(w, c) for w, c in terms if w != 0.0]


def _pad_dim1(x: torch.Tensor, length: int) -> torch.Tensor:
    if x.shape[1] == length:
        return x
    pad = x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], dim=1)


def concat_conditions(conds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch-concatenate condition dicts: tensors of rank >= 2 are zero / False-padded on dim 1
    (prompt, scene lengths) then concatenated on dim 0; other values must be equal in all."""
    keys = set(conds[0])
    for c in conds[1:]:
        if set(c) != keys:
            raise ValueError(f"guidance branches have different condition keys: {sorted(keys)} vs {sorted(c)}")
    out: dict[str, Any] = {}
    for key in conds[0]:
        values = [c[key] for c in conds]
        if all(v is None for v in values):
            out[key] = None
        elif all(isinstance(v, torch.Tensor) for v in values):
            if values[0].dim() >= 2:
                length = max(v.shape[1] for v in values)
                values = [_pad_dim1(v, length) for v in values]
            out[key] = torch.cat(values, dim=0)
        elif any(isinstance(v, torch.Tensor) or v is None for v in values):
            raise ValueError(f"guidance branches disagree on condition '{key}': some give a tensor, some not")
        else:
            if any(v != values[0] for v in values[1:]):
                raise ValueError(f"guidance branches disagree on condition '{key}': {values}")
            out[key] = values[0]
    return out


def time_grid(steps: int, sway: Optional[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """(steps + 1,) times from 0 to 1, sway-warped when ``sway`` is set."""
    t = torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=torch.float32)
    if sway is not None:
        t = t + sway * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid frames (mask (B, T)) and all channels of (B, T, C)."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    return ((pred.float() - target.float()) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0)


class RectifiedFlow(nn.Module):
    """Rectified-flow core around an estimator (see module docstring).

    Args:
        estimator: the velocity network.
        latent_dim: C, channels of a latent frame.
        config: :class:`FlowConfig`.
    """

    def __init__(self, estimator: nn.Module, latent_dim: int, config: FlowConfig):
        super().__init__()
        self.estimator = estimator
        self.config = config
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("statistics_fitted", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ standardisation
    @torch.no_grad()
    def fit_statistics(self, total: torch.Tensor, total_sq: torch.Tensor, count: float) -> None:
        """Per-channel mean / std from sums over ``count`` frames: total (C,), total_sq (C,)."""
        if count <= 0:
            raise ValueError("fit_statistics: no frames")
        mean = total.double() / count
        var = (total_sq.double() / count - mean**2).clamp_min(0.0)
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(var.sqrt().float().clamp_min(self.config.std_floor))
        self.statistics_fitted.fill_(True)

    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        """(..., C) raw latent -> standardised."""
        return (latent - self.latent_mean) / self.latent_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) standardised -> raw latent."""
        return x * self.latent_std + self.latent_mean

    # ------------------------------------------------------------------ training
    def sample_times(
        self, batch: int, device: torch.device, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        u = torch.rand(batch, device=device, generator=generator)
        if self.config.time_sampling == "logit_normal":
            n = torch.randn(batch, device=device, generator=generator)
            u = torch.sigmoid(n)
        return u

    def loss(
        self,
        x1: torch.Tensor,
        frame_mask: torch.Tensor,
        cond: Mapping[str, Any],
        noise: Optional[torch.Tensor] = None,
        t: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, Any]:
        """Flow-matching loss of standardised targets x1 (B, T, C) with mask (B, T).

        Returns ``loss`` (scalar), ``t`` (B,), ``noise`` (B, T, C), ``target`` (x1 - x0) and the
        estimator's output under ``out``.
        """
        x0 = (
            noise if noise is not None else torch.randn(x1.shape, device=x1.device, dtype=x1.dtype, generator=generator)
        )
        if t is None:
            t = self.sample_times(x1.shape[0], x1.device, generator)
        tt = t.to(x1.dtype)[:, None, None]
        x_t = (1 - tt) * x0 + tt * x1
        out = self.estimator(x_t=x_t, t=t, frame_mask=frame_mask, **cond)
        target = x1 - x0
        return {
            "loss": masked_mse(out["velocity"], target, frame_mask),
            "t": t,
            "noise": x0,
            "target": target,
            "out": out,
        }

    # ------------------------------------------------------------------ sampling
    def batch_branches(self, frame_mask: torch.Tensor, branches: Sequence[GuidanceBranch]) -> dict[str, Any]:
        """The estimator's keywords for all branches in one batch (branch-major): frame_mask
        repeated, the conditions concatenated, and, for an estimator with a ``condition`` method
        (the part of its forward that depends on neither x_t nor t), that part computed here once
        and passed back as ``condition``."""
        kwargs = dict(concat_conditions([b.cond for b in branches]), frame_mask=frame_mask.repeat(len(branches), 1))
        if hasattr(self.estimator, "condition"):
            kwargs["condition"] = self.estimator.condition(**kwargs)
        return kwargs

    def guided_velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        frame_mask: torch.Tensor,
        branches: Sequence[GuidanceBranch],
        batched: Optional[Mapping[str, Any]] = None,
    ) -> torch.Tensor:
        """sum_k w_k v(x | cond_k) with every branch in one batched estimator call; x (B, T, C), t (B,).
        ``batched``: :meth:`batch_branches` of these branches (computed once per sampling), or None."""
        k = len(branches)
        if batched is None:
            batched = self.batch_branches(frame_mask, branches)
        out = self.estimator(x_t=x.repeat(k, 1, 1), t=t.repeat(k), **batched)
        v = out["velocity"].view(k, *x.shape)
        weights = torch.tensor([b.weight for b in branches], device=x.device, dtype=v.dtype)
        return torch.einsum("k,kbtc->btc", weights, v)

    @torch.no_grad()
    def sample(
        self,
        frame_mask: torch.Tensor,
        branches: Sequence[GuidanceBranch],
        steps: Optional[int] = None,
        sway: Optional[float] = "config",
        noise: Optional[torch.Tensor] = None,
        seed: Optional[int] = None,
    ) -> torch.Tensor:
        """Euler integration from noise to standardised latents (B, T, C); padded frames are zero.

        ``branches``: the guidance terms (a single ``GuidanceBranch(1.0, cond)`` = no guidance).
        ``noise`` (B, T, C) or ``seed`` make the result deterministic.
        """
        steps = self.config.steps if steps is None else steps
        sway = self.config.sway if sway == "config" else sway
        B, T = frame_mask.shape
        C = self.latent_mean.shape[0]
        if noise is None:
            gen = torch.Generator(device=frame_mask.device)
            if seed is not None:
                gen.manual_seed(int(seed))
            noise = torch.randn(B, T, C, device=frame_mask.device, generator=gen)
        x = noise
        grid = time_grid(steps, sway, frame_mask.device)
        batched = self.batch_branches(frame_mask, branches)  # the conditions' work, once
        for i in range(steps):
            t = grid[i].expand(B)
            x = x + (grid[i + 1] - grid[i]) * self.guided_velocity(x, t, frame_mask, branches, batched)
        return x * frame_mask.unsqueeze(-1).to(x.dtype)


__all__ = [
    "FlowConfig",
    "GuidanceBranch",
    "RectifiedFlow",
    "guidance_terms",
    "concat_conditions",
    "time_grid",
    "masked_mse",
]
