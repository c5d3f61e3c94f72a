"""Data module: drama splits, frame-budget batching (also under DDP), collation shapes and masks,
pose at the codec frame rate, speaker prompts, video frames, worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset

from isdrama.data.datamodule import DataConfig, DramaDataModule, LoaderConfig
from isdrama.data.dataset import ItemOptions, words_to_frames
from isdrama.data.mrsdrama import load_dataset
from isdrama.data.sampler import FrameBudgetBatchSampler
from isdrama.data.splits import split_scenes
from isdrama.data.video_frames import VideoFrameCache, sample_times

N_Q = 4
FRAME_RATE = 75.0


def speaker_token_loader(line):
    """Test double for the token cache: T frames of the line, value = 100 * speaker index + codebook."""
    import math

    import soundfile as sf

    frames = math.ceil(sf.info(str(line.wav_path)).frames * FRAME_RATE / 48_000)
    spk = int(line.speaker[-1])
    tokens = np.broadcast_to((100 * spk + np.arange(N_Q))[None, :, None], (2, N_Q, frames))
    return tokens.astype(np.int16)


def make_module(root: Path, **kw) -> DramaDataModule:
    items = ItemOptions(frame_rate=FRAME_RATE, prompt_max_frames=20, **kw.pop("items", {}))
    cfg = DataConfig(
        root=str(root),
        val_fraction=0.25,
        test_fraction=0.25,
        items=items,
        train=LoaderConfig(max_frames=kw.pop("max_frames", 120), num_workers=kw.pop("num_workers", 0)),
    )
    return DramaDataModule(cfg, token_loader=speaker_token_loader)


def test_split_by_drama_has_no_leakage(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=8, lines_per_drama=2)
    scenes = load_dataset(root).scenes
    splits = split_scenes(scenes, 0.25, 0.25, seed=1)
    keys = {name: {s.key for s in part} for name, part in splits.items()}
    assert sum(map(len, keys.values())) == 8 and len(set.union(*keys.values())) == 8
    # hash thresholds (points 0.13 | 0.37 0.39 0.44 | 0.59 0.68 0.84 0.94), not counts
    assert (len(keys["train"]), len(keys["val"]), len(keys["test"])) == (4, 3, 1)
    # stable: adding dramas moves none of the others (more in tests/test_splits.py)
    write_tiny_dataset(tmp_path / "ds", n_dramas=16, lines_per_drama=2)
    bigger = split_scenes(load_dataset(root).scenes, 0.25, 0.25, seed=1)
    moved = [k for name in ("train", "val", "test") for k in keys[name] if k not in {s.key for s in bigger[name]}]
    assert moved == []


def test_frame_budget_sampler_covers_all_within_budget():
    lengths = np.random.default_rng(0).integers(20, 200, size=300)
    sampler = FrameBudgetBatchSampler(lengths, max_frames=1000, shuffle=True, seed=3, bucket_size=64)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(300))
    for b in batches:
        assert len(b) * lengths[b].max() <= 1000 or len(b) == 1
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.25  # bucketing keeps padding small
    sampler.set_epoch(1)
    assert [list(b) for b in sampler] != batches  # reshuffled per epoch


def test_frame_budget_sampler_ddp_ranks_disjoint_and_equal():
    lengths = np.arange(10, 110)
    ranks = [list(FrameBudgetBatchSampler(lengths, 400, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    all_batches = list(FrameBudgetBatchSampler(lengths, 400, seed=0))
    n = len(all_batches)
    if n % 2 == 0:
        seen = [tuple(b) for r in ranks for b in r]
        assert sorted(seen) == sorted(tuple(b) for b in all_batches)


def test_words_to_frames_sum_exactly():
    frames = words_to_frames([0.21, 0.1, 0.333, 0.0, 0.5], 75.0, 86)
    assert frames.sum() == 86 and (frames >= 0).all()
    assert list(frames[:3]) == [16, 7, 25]  # rounded cumulative boundaries 16, 23, 48


def test_batches_shapes_masks_pose_and_prompts(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=4, lines_per_drama=4)
    dm = make_module(root)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 8, "val": 4, "test": 4}
    batches = list(dm.train_dataloader())
    assert sum(len(b) for b in batches) == 8
    for batch in batches:
        B, T = batch.mask.shape
        assert batch.tokens.shape == (B, 2, N_Q, T) and batch.pose.shape == (B, T, 9)
        assert (batch.mask.sum(1) == batch.frames).all() and int(batch.frames.max()) == T
        for b in range(B):
            n = int(batch.frames[b])
            assert int(batch.word_frames[b].sum()) == n
            spk = batch.speakers[int(batch.speaker_ids[b])]
            assert batch.tokens[b, 0, 1, 0].item() == 100 * int(spk[-1]) + 1
            # pose resampled to the codec rate: spk0 sits at x = -2, spk1 at x = +2
            assert torch.allclose(batch.pose[b, :n, 0], torch.full((n,), -2.0 if spk == "spk0" else 2.0))
            # speaker prompt is another line of the same speaker, at most prompt_max_frames long
            plen = int(batch.prompt_mask[b].sum())
            assert 0 < plen <= 20
            assert (batch.prompt_tokens[b, :, 1, :plen] == 100 * int(spk[-1]) + 1).all()
        assert batch.tokens[~batch.mask.unsqueeze(1).unsqueeze(1).expand_as(batch.tokens)].eq(0).all()
        assert batch.pose_prompts[0].startswith("[STATIC]")


def test_workers_and_video_frames(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=4, lines_per_drama=2, with_video=True)
    dm = make_module(root, items={"load_video": True, "video_size": (24, 32)}, num_workers=2)
    dm.setup()
    batches = list(dm.train_dataloader())
    batch = batches[0]
    assert batch.video.dtype == torch.uint8 and batch.video.shape[2:] == (3, 24, 32)
    line = next(ln for ln in dm.datasets["train"].lines if ln.key == batch.keys[0])
    n_frames = len(sample_times(line.start, line.end, 4.0))
    assert int(batch.video_mask[0].sum()) == n_frames
    # cached on disk under the dataset root, and decoded frames come from the right time
    cached = list((root / ".isdrama_cache" / "video").rglob("*.npy"))
    assert cached
    cache = VideoFrameCache(None, 4.0, (24, 32))
    frames = cache.get(line.video_path, line.start, line.end)
    expected_index = np.floor(sample_times(line.start, line.end, 4.0) * 24).astype(int)
    grey = frames[:, 12, 16, 0].astype(int)
    assert np.all(np.abs(grey - (expected_index * 5) % 256) <= 6)


def test_missing_video_file_is_named(tmp_path):
    from isdrama.data.schema import DataError

    cache = VideoFrameCache(tmp_path / "c", 4.0, (8, 8))
    with pytest.raises(DataError, match="nope.mp4: video file not found"):
        cache.get(tmp_path / "nope.mp4", 0.0, 1.0)


def test_empty_split_is_reported(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=1, lines_per_drama=2)
    dm = make_module(root)
    with pytest.raises(ValueError, match="the val split is empty"):
        dm.val_dataloader()


def test_resumable_loader_continues_mid_epoch_and_rolls_over_at_the_epoch_end():
    from torch.utils.data import Dataset

    from isdrama.data.sampler import ResumableDataLoader

    class Index(Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return i

    def loader():
        sampler = FrameBudgetBatchSampler([5 + i % 7 for i in range(40)], 30, shuffle=True, seed=3)
        return ResumableDataLoader(Index(), batch_sampler=sampler, collate_fn=list)

    a = loader()
    a.batch_sampler.set_epoch(2)
    full = list(a)
    it = iter(a)
    seen = [next(it) for _ in range(3)]
    state = a.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    b = loader()
    b.load_state_dict(state)
    assert seen + list(b) == full  # the rest of the same order
    assert b.state_dict() == {"epoch": 2, "batches": len(full)}
    c = loader()
    c.load_state_dict(b.state_dict())  # saved at the end of epoch 2: epoch 3 starts whole
    a.batch_sampler.set_epoch(3)
    assert c.batch_sampler.epoch == 3 and list(c) == list(a)
