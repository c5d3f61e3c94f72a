"""Write the trained codec at marks of training time (the curve of docs/benchmarks.md) and at the end.

Training time counts the training batches only (validation and checkpoint writing excluded), and
survives a resume (it is part of the Lightning checkpoint). Files: ``DIR/codec-<minutes>min.pt``
at each mark, ``DIR/codec-last.pt`` at the end; each loads with ``codec.checkpoint=PATH``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class CodecExport(pl.Callback):
    """Calls ``module.export(path, extra)`` (the codec stage) at training-time marks.

    Args:
        dirpath: output folder.
        minutes: marks in minutes of training time.
        stop_after_minutes: stop training once this much training time has passed (None = never;
            the trainer's ``max_time`` also counts validation).
    """

    def __init__(self, dirpath: str, minutes: Sequence[float] = (), stop_after_minutes: Optional[float] = None):
        self.dirpath = Path(dirpath)
        self.minutes = sorted(float(m) for m in minutes)
        self.stop_after = None if stop_after_minutes is None else float(stop_after_minutes)
        self.train_seconds = 0.0
        self.done: list[float] = []
        self._t0: Optional[float] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "export", None)):
            raise TypeError(f"CodecExport needs a module with export(path, extra); {type(pl_module).__name__} has none")

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> None:
        if trainer.is_global_zero:
            path = pl_module.export(self.dirpath / name, {"train_minutes": self.train_seconds / 60.0})
            log.info("codec exported: %s (%.1f min of training)", path, self.train_seconds / 60.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None
        minutes = self.train_seconds / 60.0
        for mark in self.minutes:
            if mark not in self.done and minutes >= mark:
                self.done.append(mark)
                self._export(trainer, pl_module, f"codec-{mark:g}min.pt")
        if self.stop_after is not None and minutes >= self.stop_after:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._export(trainer, pl_module, "codec-last.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds, "done": list(self.done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self.done = [float(m) for m in state_dict.get("done", [])]
