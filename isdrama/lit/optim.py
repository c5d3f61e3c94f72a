"""Adam with a linear learning-rate warm-up, built from the ``model.optimizer`` config group.

Reusable by every training stage: ``configure_adam(module.parameters(), **cfg)`` returns what a
LightningModule's ``configure_optimizers`` returns (the scheduler steps every optimiser step).

Schedule: lr(step) = lr * min(1, (step + 1) / warmup_steps), then constant (the paper's
recipe), or, with ``decay: cosine``, a cosine from lr down to ``min_lr_ratio * lr`` at
``decay_steps`` (held there afterwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import torch

from isdrama.utils.config import build_config

DECAYS = ("none", "cosine")


@dataclass
class AdamConfig:
    """Hyper-parameters of :func:`configure_adam` (configs/model/optimizer/adam.yaml).

    lr: peak learning rate. betas, eps, weight_decay: Adam's (weight decay is decoupled, AdamW,
    when ``decoupled``). warmup_steps: linear warm-up length (0 = none). decay: ``none`` or
    ``cosine``. decay_steps: step where the cosine reaches ``min_lr_ratio * lr`` (required with
    cosine).
    """

    lr: float = 1e-4
    betas: Sequence[float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    warmup_steps: int = 10_000
    decay: str = "none"
    decay_steps: Optional[int] = None
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"model.optimizer.lr must be > 0, got {self.lr}")
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"model.optimizer.betas must be two numbers, got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError(f"model.optimizer.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay not in DECAYS:
            raise ValueError(f"model.optimizer.decay must be one of {DECAYS}, got {self.decay!r}")
        if self.decay == "cosine" and (self.decay_steps is None or self.decay_steps <= self.warmup_steps):
            raise ValueError(
                "model.optimizer.decay=cosine needs decay_steps > warmup_steps, got "
                f"decay_steps={self.decay_steps}, warmup_steps={self.warmup_steps}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"model.optimizer.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def lr_factor(step: int, cfg: AdamConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "cosine":
        span = cfg.decay_steps - cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def configure_adam(parameters: Iterable[torch.nn.Parameter], **config: Any) -> dict[str, Any]:
    """Adam(W) over the trainable ``parameters`` + the warm-up schedule, in Lightning's format."""
    cfg = build_config(AdamConfig, config, "model.optimizer")
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("configure_adam: no trainable parameters")
    cls = torch.optim.AdamW if cfg.decoupled else torch.optim.Adam
    optimizer = cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"},
    }


__all__ = ["AdamConfig", "configure_adam", "lr_factor"]
