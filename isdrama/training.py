"""Turn a composed training config into objects and run Lightning (called by train.py).

The config tree is documented in configs/train.yaml; nothing here reads Hydra globals.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def instantiate_group(cfg: Optional[DictConfig]) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); entries without
    ``_target_`` or set to null are skipped."""
    if not cfg:
        return []
    objects = []
    for name, conf in cfg.items():
        if conf is None:
            continue
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ValueError(f"config entry '{name}' has no _target_: {OmegaConf.to_yaml(conf)}")
        objects.append(instantiate(conf))
    return objects


def drop_logger_only(callbacks: list[pl.Callback], loggers: list) -> list[pl.Callback]:
    """Without a logger (``logger=none``) drop callbacks that only log and would refuse to run
    (LearningRateMonitor raises on a trainer with no logger)."""
    if loggers:
        return callbacks
    from pytorch_lightning.callbacks import LearningRateMonitor

    kept = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    if len(kept) != len(callbacks):
        log.info("no logger: LearningRateMonitor dropped")
    return kept


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list) -> pl.Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers if loggers else False)


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) the configured model on the configured data.

    Returns the trainer's final callback metrics as floats.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    log.info("data: %s", cfg.data.root)
    datamodule = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    model = instantiate(cfg.model, _recursive_=False)
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = drop_logger_only(instantiate_group(cfg.get("callbacks")), loggers)
    trainer = build_trainer(cfg, callbacks, loggers)
    try:
        for lg in loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if cfg.get("test", False):
            best = None
            ckpt_cb = getattr(trainer, "checkpoint_callback", None)
            if ckpt_cb is not None and getattr(ckpt_cb, "best_model_path", ""):
                best = ckpt_cb.best_model_path
            trainer.test(model, datamodule=datamodule, ckpt_path=best)
    finally:
        if trainer.is_global_zero:
            _save_splits(datamodule, cfg)
        _finish_wandb(loggers)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _save_splits(datamodule: Any, cfg: DictConfig) -> None:
    """Copy the drama split the run used into its output folder (``OUTPUT_DIR/splits.json``), so the
    run records its split even if the dataset is re-split later."""
    from pathlib import Path

    from isdrama.data.splits import SPLITS_FILE, write_splits

    splits = getattr(datamodule, "splits", None)
    out = OmegaConf.select(cfg, "paths.output_dir")
    if splits is None or not out:
        return
    try:
        write_splits(Path(out) / SPLITS_FILE, splits)
    except ValueError as exc:  # never hide the run's own outcome behind this copy
        log.warning("could not copy the split into the run folder: %s", exc)


def _finish_wandb(loggers: list) -> None:
    """Close a W&B run this call opened: an open run would be reused by the next WandbLogger of
    the same process (tests, notebooks, sweeps in one interpreter)."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()
