"""The real drama-stage configs for tests: ``experiment=drama_demo`` composed and resolved, and
DramaTransformer configs from configs/model/transformer (so tests never carry a second preset)."""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from model_configs import CONFIG_DIR
from omegaconf import OmegaConf

from isdrama.models.drama_transformer import DramaTransformerConfig
from isdrama.utils.config import build_config


@functools.lru_cache(maxsize=None)
def _model(experiment: str) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def drama_model(experiment: str = "drama_demo") -> dict[str, Any]:
    """``cfg.model`` of a drama experiment (a fresh copy)."""
    return copy.deepcopy(_model(experiment))


def transformer_config(
    experiment: str = "drama_demo",
    latent_dim: int = 16,
    content_dim: int = 8,
    pose_dim: int = 8,
    scene_dim: int = 4,
    **overrides: Any,
) -> DramaTransformerConfig:
    """The experiment's DramaTransformerConfig with the given input widths; ``overrides`` replace
    top-level keys or, given as ``"mamba.backend": "loop"``, nested ones."""
    values = drama_model(experiment)["transformer"]
    for key, value in overrides.items():
        target = values
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        if last not in target:
            raise KeyError(f"model.transformer has no key {key}")
        target[last] = value
    fixed = dict(latent_dim=latent_dim, content_dim=content_dim, pose_dim=pose_dim, scene_dim=scene_dim)
    return build_config(DramaTransformerConfig, values, "model.transformer", **fixed)


def wake_gates(model: torch.nn.Module) -> torch.nn.Module:
    """Add small noise to every parameter, waking the zero-initialised gates (AdaLN-Zero, the final
    layer, the scene gate) so every path of the model matters; returns the model."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
