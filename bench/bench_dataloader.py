"""Data loader throughput against the training step's consumption.

    .venv/bin/python bench/bench_dataloader.py [--root data/synth_demo] [--dramas 24] \
        [--experiment pose_pretrain] [--workers 0 2] [--batches 20] [--steps 10]

1. Loader alone: batches/s and model frames/s of the real DramaDataModule (built from the
   experiment's composed data config), for each --workers value, after one warm-up epoch (video
   frames decoded and cached).
2. Consumption: a real Lightning fit of the experiment's model for --steps batches; a callback
   times the step itself (batch start -> end) and the wait for the next batch (loader time seen
   by the trainer).
The loader keeps up when its batches/s exceeds the steps/s. Prints one table; copy it into
docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compose(experiment: str, root: Path, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = hydra_compose(
            config_name="train",
            overrides=[f"experiment={experiment}", f"data.root={root}", "logger=none", *extra],
            return_hydra_config=True,
        )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(ROOT / "outputs" / "bench_dataloader")
            del cfg.hydra
    return cfg


def loader_rate(cfg, workers: int, batches: int) -> tuple[float, float]:
    """(batches/s, frames/s) of the train loader with ``workers`` processes."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.data.train.num_workers = workers
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    for _ in dm.train_dataloader():  # warm-up: fill the video-frame cache
        pass
    n, frames, start = 0, 0, time.perf_counter()
    while n < batches:
        for batch in dm.train_dataloader():
            n += 1
            frames += int(batch.frames.sum())
            if n >= batches:
                break
    elapsed = time.perf_counter() - start
    return n / elapsed, frames / elapsed


def step_rate(cfg, steps: int) -> tuple[float, float]:
    """(steps/s of the step alone, mean loader wait per step in s) in a real Lightning fit."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    class Timer(pl.Callback):
        def __init__(self):
            self.step, self.wait, self._t = [], [], None

        def on_train_batch_start(self, trainer, module, batch, idx):
            now = time.perf_counter()
            if self._t is not None:
                self.wait.append(now - self._t)
            self._t = now

        def on_train_batch_end(self, trainer, module, outputs, batch, idx):
            now = time.perf_counter()
            self.step.append(now - self._t)
            self._t = now

    timer = Timer()
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    model = instantiate(cfg.model, _recursive_=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + 2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    steps_t = timer.step[2:] or timer.step
    wait_t = timer.wait[2:] or timer.wait or [0.0]
    return 1.0 / (sum(steps_t) / len(steps_t)), sum(wait_t) / len(wait_t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT / "data" / "synth_demo")
    p.add_argument("--dramas", type=int, default=24, help="synthesised when --root has no dramas")
    p.add_argument("--experiment", default="pose_pretrain")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg = compose(args.experiment, args.root, [f"data.synth.dramas={args.dramas}", *args.override])
    rows = []
    for w in args.workers:
        bps, fps = loader_rate(cfg, w, args.batches)
        rows.append((f"loader, num_workers={w}", f"{bps:.2f} batches/s", f"{fps:,.0f} frames/s"))
    sps, wait = step_rate(cfg, args.steps)
    rows.append(
        (f"training step ({args.experiment}, CPU)", f"{sps:.2f} steps/s", f"loader wait {wait * 1000:.0f} ms/step")
    )
    print(f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
