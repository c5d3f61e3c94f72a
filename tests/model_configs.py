"""The real model configs for tests: configs/model/** as composed by ``experiment=pose_pretrain``
(the tiny sizes), resolved to plain dicts, so tests never carry a second preset."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@functools.lru_cache(maxsize=None)
def _model_group() -> dict[str, Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=["experiment=pose_pretrain"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def model_config(group: str, **overrides: Any) -> dict[str, Any]:
    """``cfg.model.<group>`` of the tiny experiment (e.g. ``content``, ``pose_encoder``) with
    ``overrides``; a fresh copy per call."""
    values = copy.deepcopy(_model_group()[group])
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise KeyError(f"model.{group} has no key(s) {unknown}")
    values.update(overrides)
    return values


def pose_pretrain_kwargs() -> dict[str, Any]:
    """The whole ``cfg.model`` of the tiny experiment as PosePretrainModule keyword arguments."""
    values = copy.deepcopy(_model_group())
    values.pop("_target_")
    return values
