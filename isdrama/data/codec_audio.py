"""Binaural audio clips for the codec stage: random crops of training lines, whole validation lines.

Lines come from an MRSDrama-layout root split by its ``splits.json`` (the same drama split every
stage uses, so a codec never trains on a line the drama stage or the evaluation holds out). Audio
is read at 48 kHz, resampled once to the codec rate and kept in memory (float32: 130 minutes of
binaural audio at 24 kHz take 1.5 GB).

Shapes: ``CodecBatch.wav`` (B, 2, S) at the codec rate, zero-padded after ``lengths``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader, Dataset, Sampler

from isdrama.data.audio import read_audio
from isdrama.data.schema import DATA_SAMPLE_RATE, DramaLine

log = logging.getLogger(__name__)


@dataclass
class CodecBatch:
    """B binaural clips: ``wav`` (B, 2, S), ``lengths`` (B,) valid samples, line ``names``,
    transcripts ``texts`` and ``languages`` (for CER of the round trip)."""

    wav: torch.Tensor
    lengths: torch.Tensor
    names: list[str]
    texts: list[str]
    languages: list[Optional[str]]

    def to(self, device: torch.device | str) -> "CodecBatch":
        return CodecBatch(self.wav.to(device), self.lengths.to(device), self.names, self.texts, self.languages)

    def __len__(self) -> int:
        return int(self.wav.shape[0])


class BinauralClipDataset(Dataset):
    """Clips of ``lines`` at ``sample_rate``: a random ``segment`` samples of a line (train; lines
    shorter are zero-padded; the crop is drawn from (seed, epoch, index), the epoch coming with the
    index from :class:`EpochShuffle`), or the whole line (``segment`` None). ``gain_db``: a random gain, the same
    for both ears (interaural cues unchanged), drawn in [-gain_db, +gain_db] per training item."""

    def __init__(
        self,
        lines: Sequence[DramaLine],
        sample_rate: int,
        segment: Optional[int],
        gain_db: float = 0.0,
        seed: int = 0,
    ):
        self.lines = list(lines)
        self.sample_rate = int(sample_rate)
        self.segment = None if segment is None else int(segment)
        self.gain_db = float(gain_db)
        self.seed = int(seed)
        self._audio: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.lines)

    def audio(self, i: int) -> torch.Tensor:
        """Line ``i`` as (2, S) float32 at ``sample_rate`` (read and resampled once)."""
        if i not in self._audio:
            wav, _ = read_audio(self.lines[i].wav_path, expect_sr=DATA_SAMPLE_RATE, expect_channels=2)
            x = torch.from_numpy(wav)
            if self.sample_rate != DATA_SAMPLE_RATE:
                x = AF.resample(x, DATA_SAMPLE_RATE, self.sample_rate)
            self._audio[i] = x.contiguous()
        return self._audio[i]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key``: a line index, or (epoch, index) from :class:`EpochShuffle` (the epoch of the crop)."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        x = self.audio(i)
        line = self.lines[i]
        n = x.shape[1]
        if self.segment is not None:
            rng = np.random.default_rng((self.seed, epoch, i))
            start = int(rng.integers(0, max(1, n - self.segment + 1)))
            x = x[:, start : start + self.segment]
            n = x.shape[1]
            if self.gain_db > 0:
                x = x * float(10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0))
        return {
            "wav": x,
            "length": n,
            "name": f"{line.drama_id}/{line.line_id}",
            "text": line.text,
            "language": line.language,
        }


class EpochShuffle(Sampler):
    """A permutation of range(n) drawn from (seed, epoch), as (epoch, index) pairs so the dataset
    draws that epoch's crops. The epoch is read from ``epoch_of()`` when iteration starts (the
    trainer's ``current_epoch``): Lightning's own ``set_epoch`` calls run ahead by one when it
    resumes from an end-of-epoch checkpoint, so a resumed run would shuffle differently."""

    def __init__(self, n: int, seed: int, epoch_of: Callable[[], int]):
        self.n, self.seed, self.epoch_of = int(n), int(seed), epoch_of

    def __iter__(self):
        def draws():  # lazy: the epoch is read at the first batch, not when the iterator is made
            epoch = int(self.epoch_of())
            for i in np.random.default_rng((self.seed, epoch)).permutation(self.n).tolist():
                yield (epoch, i)

        return draws()

    def __len__(self) -> int:
        return self.n


def collate_clips(items: Sequence[Mapping[str, Any]]) -> CodecBatch:
    """Pad clips to the longest and stack them into a CodecBatch."""
    S = max(int(it["length"]) for it in items)
    wav = torch.zeros(len(items), 2, S)
    for b, it in enumerate(items):
        wav[b, :, : int(it["length"])] = it["wav"]
    lengths = torch.tensor([int(it["length"]) for it in items], dtype=torch.long)
    return CodecBatch(
        wav, lengths, [it["name"] for it in items], [it["text"] for it in items], [it["language"] for it in items]
    )


class CodecAudioDataModule(pl.LightningDataModule):
    """Train / val / test loaders of CodecBatches over a dataset root (configs/data/codec_audio.yaml).

    Args:
        root: MRSDrama-layout root (synthesised first when ``synth`` is set and it holds no drama).
        sample_rate: clip rate; None = the rate of ``codec``'s model.
        segment_seconds: training crop length.
        batch_size / val_batch_size: clips per batch.
        val_lines: validation uses the first this many lines of the val split (whole lines).
        gain_db: random common gain of training clips.
        num_workers: loader processes (0 = in the training process; the in-memory audio is then
            shared by every epoch).
        val_fraction / test_fraction / seed / splits_file: the drama split (see isdrama.data.splits).
        synth: options of the synthetic generator (None: the root must exist).
        codec: the codec group (train.py passes it to every data module).
    """

    def __init__(
        self,
        root: str,
        sample_rate: Optional[int],
        segment_seconds: float,
        batch_size: int,
        val_batch_size: int,
        val_lines: int,
        gain_db: float,
        num_workers: int,
        val_fraction: float,
        test_fraction: float,
        seed: int,
        splits_file: Optional[str] = None,
        synth: Optional[Mapping[str, Any]] = None,
        codec: Optional[Mapping[str, Any]] = None,
    ):
        super().__init__()
        self.root = Path(root)
        if sample_rate is None:
            if codec is None:
                raise ValueError("data.sample_rate is null and no codec config was given to take it from")
            from isdrama.codec.config import MODEL_SPECS

            sample_rate = MODEL_SPECS[str(codec["model"])].sample_rate
        self.sample_rate = int(sample_rate)
        self.segment = int(round(float(segment_seconds) * self.sample_rate))
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size)
        self.val_lines, self.gain_db, self.num_workers = int(val_lines), float(gain_db), int(num_workers)
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, int(seed)
        self.splits_file = splits_file
        self.synth = synth
        self.splits = None
        self.datasets: dict[str, BinauralClipDataset] = {}

    def prepare_data(self) -> None:
        from isdrama.data.factory import has_dramas, synthesize_if_missing
        from isdrama.utils.config import to_plain

        if self.synth:
            synthesize_if_missing(self.root, to_plain(self.synth))
        if not has_dramas(self.root):
            raise FileNotFoundError(
                f"{self.root}: no dramas found. Generate a synthetic set with "
                f"`isdrama-data synth {self.root} --dramas 240` or point data.root at MRSDrama"
            )

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        from isdrama.data.datamodule import CONFIG_HINT
        from isdrama.data.mrsdrama import load_dataset
        from isdrama.data.splits import ensure_splits

        index = load_dataset(self.root)
        self.splits = ensure_splits(
            self.root,
            [s.key for s in index.scenes],
            self.val_fraction,
            self.test_fraction,
            self.seed,
            path=self.splits_file,
            hint=CONFIG_HINT,
        )
        parts = self.splits.partition(index.scenes)
        lines = {k: [ln for s in v for ln in s.lines] for k, v in parts.items()}
        log.info("codec clips: %s", ", ".join(f"{k} {len(v)} lines" for k, v in lines.items()))
        self.datasets["train"] = BinauralClipDataset(
            lines["train"], self.sample_rate, self.segment, self.gain_db, self.seed
        )
        self.datasets["val"] = BinauralClipDataset(lines["val"][: self.val_lines], self.sample_rate, None)
        self.datasets["test"] = BinauralClipDataset(lines["test"], self.sample_rate, None)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"{self.root}: the {split} split has no lines ({self.splits.path})")
        if len(dataset) < batch_size and shuffle:
            raise ValueError(f"{self.root}: {len(dataset)} {split} lines, fewer than data.batch_size={batch_size}")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffle(len(dataset), self.seed, self._current_epoch) if shuffle else None,
            drop_last=shuffle,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
        )

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)
