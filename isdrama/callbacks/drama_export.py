"""Export of the drama stage's EMA weights at the end of training (``OUTPUT/drama/drama-last.pt``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class DramaExport(pl.Callback):
    """Calls ``module.export(dirpath / "drama-last.pt")`` when fitting ends (rank 0)."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            path = pl_module.export(self.dirpath / "drama-last.pt")
            log.info("drama stage exported (EMA weights) to %s", path)
