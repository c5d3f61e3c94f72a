"""LightningDataModule over an MRSDrama-layout root (real or synthetic).

Splits by drama through the dataset's ``splits.json`` (created on first use, see
:mod:`isdrama.data.splits`), batches by a padded-frame budget (``FrameBudgetBatchSampler``), collates
tokens, content, pose at the codec frame rate, video frames, text prompts and speaker prompts
into a ``DramaBatch``. Distributed training: the sampler splits batches across ranks itself, so
the Trainer must run with ``use_distributed_sampler=False`` (the trainer configs set it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from isdrama.data.dataset import ContentTokenizer, DramaCollator, DramaLineDataset, F0Loader, ItemOptions, TokenLoader
from isdrama.data.mrsdrama import load_dataset
from isdrama.data.sampler import FrameBudgetBatchSampler, ResumableDataLoader
from isdrama.data.schema import DatasetIndex, DramaLine
from isdrama.data.splits import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SPLITS, Splits, ensure_splits
from isdrama.data.video_frames import VideoFrameCache

log = logging.getLogger(__name__)

#: How a training run sets the split values (appended to split-file errors).
CONFIG_HINT = "(training: data.val_fraction, data.test_fraction, data.seed; data.splits_file for another file)"


@dataclass
class LoaderConfig:
    """Batching of one split: a padded-frame budget per batch (per GPU) and loader workers."""

    max_frames: int = 12_000
    max_batch_size: Optional[int] = None
    num_workers: int = 0
    bucket_size: int = 256
    drop_last: bool = False


@dataclass
class DataConfig:
    """Everything the data module needs (mirrors ``configs/data/*.yaml``).

    Args:
        root: dataset root (MRSDrama layout).
        val_fraction / test_fraction: share of dramas per split (a seeded hash threshold per drama,
            see isdrama.data.splits); they must match the split file when it exists.
        seed: split and sampling seed.
        splits_file: the split file (default ROOT/splits.json); written on first use, extended
            with dramas added later, never silently re-split.
        sets: restrict to these set folders (None = all).
        items: what each item carries (see ItemOptions).
        train / val: batching per split (test uses ``val``).
        cache_dir: video-frame cache (default ROOT/.isdrama_cache/video).
    """

    root: str = "data/synth_demo"
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    seed: int = DEFAULT_SEED
    sets: Optional[list[str]] = None
    items: ItemOptions = field(kw_only=True)
    train: LoaderConfig = field(default_factory=LoaderConfig)
    val: LoaderConfig = field(default_factory=LoaderConfig)
    cache_dir: Optional[str] = None
    splits_file: Optional[str] = None


class DramaDataModule(pl.LightningDataModule):
    """Train/val/test loaders of DramaBatches.

    Args:
        config: DataConfig.
        token_loader: reads a line's cached tokens (e.g. a ``TokenCache``), or a zero-argument
            factory of one marked by ``lazy_token_loader=True`` (built in ``setup``, after
            ``prepare_data`` has filled the cache); required when ``config.items.load_tokens``.
        tokenizer: optional content tokenizer (words + frames -> token ids + frames).
        prepare: optional callable run once on rank 0 in ``prepare_data`` (e.g. synthesise the
            demo dataset and tokenise it when missing).
        f0_loader: reads a line's F0 targets (required when ``config.items.load_f0``).
    """

    def __init__(
        self,
        config: DataConfig,
        token_loader: Optional[TokenLoader] = None,
        tokenizer: Optional[ContentTokenizer] = None,
        prepare: Optional[Callable[[], Any]] = None,
        lazy_token_loader: bool = False,
        f0_loader: Optional[F0Loader] = None,
    ):
        super().__init__()
        self.config = config
        self.token_loader = token_loader
        self._lazy_token_loader = lazy_token_loader
        self.tokenizer = tokenizer
        self.f0_loader = f0_loader
        self._prepare = prepare
        self.index: Optional[DatasetIndex] = None
        self.datasets: dict[str, DramaLineDataset] = {}
        self.speakers: list[str] = []
        self.scenes: list[str] = []
        self.splits: Optional[Splits] = None

    @property
    def root(self) -> Path:
        return Path(self.config.root)

    def prepare_data(self) -> None:
        if self._prepare is not None:
            self._prepare()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        cfg = self.config
        if self._lazy_token_loader and self.token_loader is not None:
            self.token_loader = self.token_loader()
            self._lazy_token_loader = False
        self.index = load_dataset(self.root)
        scenes = [s for s in self.index.scenes if cfg.sets is None or s.set_name in cfg.sets]
        if not scenes:
            raise ValueError(f"{self.root}: no dramas in sets {cfg.sets} (found sets {self.index.sets})")
        # the split covers every drama of the root (not only the chosen sets), so it is the same
        # file whatever ``sets`` a run picks
        self.splits = ensure_splits(
            self.root,
            [s.key for s in self.index.scenes],
            cfg.val_fraction,
            cfg.test_fraction,
            cfg.seed,
            path=cfg.splits_file,
            hint=CONFIG_HINT,
        )
        splits = self.splits.partition(scenes)
        log.info(
            "splits: %s (digest %s): %s dramas",
            self.splits.path,
            self.splits.digest[:12],
            ", ".join(f"{k} {len(v)}" for k, v in splits.items()),
        )
        all_lines = [line for s in scenes for line in s.lines]
        self.speakers = sorted({line.speaker for line in all_lines})
        self.scenes = sorted({line.scene_id for line in all_lines if line.scene_id is not None})
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.root / ".isdrama_cache" / "video"
        video_cache = (
            VideoFrameCache(cache_dir, cfg.items.video_fps, tuple(cfg.items.video_size))
            if cfg.items.load_video
            else None
        )
        for split in SPLITS:
            lines: list[DramaLine] = [line for s in splits[split] for line in s.lines]
            self.datasets[split] = DramaLineDataset(
                lines,
                cfg.items,
                token_loader=self.token_loader,
                video_cache=video_cache,
                tokenizer=self.tokenizer,
                train=split == "train",
                seed=cfg.seed,
                f0_loader=self.f0_loader,
            )

    def collator(self) -> DramaCollator:
        return DramaCollator(self.speakers, self.scenes)

    def _loader(self, split: str, loader_cfg: LoaderConfig, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        dataset = self.datasets[split]
        if len(dataset) == 0:
            where = self.splits.path if self.splits is not None else self.root
            raise ValueError(
                f"{self.root}: the {split} split is empty ({where}); add dramas, or re-split "
                "with other fractions (`isdrama-data split ROOT --val V --test T --force`, then "
                "set data.val_fraction / data.test_fraction to match)"
            )
        sampler = FrameBudgetBatchSampler(
            dataset.approx_frames(),
            loader_cfg.max_frames,
            max_batch_size=loader_cfg.max_batch_size,
            shuffle=shuffle,
            seed=self.config.seed,
            bucket_size=loader_cfg.bucket_size,
            drop_last=loader_cfg.drop_last,
            on_epoch=dataset.set_epoch,
        )
        return ResumableDataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.collator(),
            num_workers=loader_cfg.num_workers,
            persistent_workers=False,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.config.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.config.val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.config.val, shuffle=False)
