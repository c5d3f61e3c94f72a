"""Batches by total frames (the paper's "12 k frames per GPU"), distributed-aware."""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`FrameBudgetBatchSampler` that Lightning checkpoints: its state
    is the sampler's epoch and the batches this epoch's iterator has yielded, so a run resumed
    mid-epoch continues with the next batch of the same order (Lightning restores it before it
    creates the iterator; a sized loader is not prefetched by Lightning, so yielded = consumed)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, FrameBudgetBatchSampler):
            raise TypeError("ResumableDataLoader needs a FrameBudgetBatchSampler as batch_sampler")
        self._yielded = 0

    def __iter__(self):
        start = self.batch_sampler._skip
        self._yielded = start
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.batch_sampler.epoch), "batches": int(self._yielded)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        sampler.set_epoch(int(state["epoch"]))
        if int(state["batches"]) >= len(sampler):  # saved at the epoch's end: the next one starts
            sampler.set_epoch(int(state["epoch"]) + 1)
        else:
            sampler.skip_next(int(state["batches"]))


class FrameBudgetBatchSampler(Sampler[list[int]]):
    """Groups items of similar length into batches whose padded size stays under a frame budget.

    A batch's cost is ``len(batch) * max_len`` (what the padded tensor holds). Items are sorted by
    length inside buckets of ``bucket_size`` shuffled items, so padding stays small while the order
    still changes each epoch (``set_epoch``). Under DDP each rank takes every ``world``-th batch of
    one shared list, truncated to a common count so all ranks step together.

    Args:
        lengths: frames per item.
        max_frames: frame budget per batch (padded); an item longer than the budget forms its own batch.
        max_batch_size: optional cap on items per batch.
        shuffle: reshuffle every epoch (train) or keep a fixed order (val/test).
        num_replicas / rank: DDP layout; read from torch.distributed when None.
        on_epoch: called with the epoch by ``set_epoch`` (e.g. the dataset's own ``set_epoch``).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_frames: int,
        max_batch_size: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        bucket_size: int = 256,
        drop_last: bool = False,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        on_epoch: Optional[Callable[[int], None]] = None,
    ):
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_frames = int(max_frames)
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_size = bucket_size
        self.drop_last = drop_last
        self._replicas = num_replicas
        self._rank = rank
        self.epoch = 0
        self.on_epoch = on_epoch
        self._skip = 0

    @property
    def num_replicas(self) -> int:
        if self._replicas is not None:
            return self._replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch; it reseeds the shuffle."""
        self.epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def _all_batches(self) -> list[list[int]]:
        order = np.arange(len(self.lengths))
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            bucket = order[start : start + self.bucket_size]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            batch: list[int] = []
            longest = 0
            for idx in bucket.tolist():
                new_longest = max(longest, int(self.lengths[idx]))
                too_many = self.max_batch_size is not None and len(batch) >= self.max_batch_size
                if batch and (new_longest * (len(batch) + 1) > self.max_frames or too_many):
                    batches.append(batch)
                    batch, new_longest = [], int(self.lengths[idx])
                batch.append(idx)
                longest = new_longest
            if batch:
                batches.append(batch)
        if self.shuffle:
            rng = np.random.default_rng(self.seed + self.epoch + 1)
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self._all_batches()
        world = self.num_replicas
        if world > 1:
            per_rank = len(batches) // world if self.drop_last else -(-len(batches) // world)
            if len(batches) < per_rank * world:  # pad by repeating batches so every rank steps equally
                batches = batches + batches[: per_rank * world - len(batches)]
            batches = batches[self.rank : per_rank * world : world]
        return batches

    def skip_next(self, n: int) -> None:
        """The next iteration starts after its first ``n`` batches (a run resumed mid-epoch)."""
        self._skip = max(0, int(n))

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        return iter(self._rank_batches()[skip:])

    def __len__(self) -> int:
        return len(self._rank_batches())


def pad_stack(tensors: Sequence[torch.Tensor], dim: int = -1, value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad tensors along ``dim`` to the longest and stack: returns (B, ...) and a (B, T) bool mask."""
    lengths = [t.shape[dim] for t in tensors]
    longest = max(lengths)
    padded = []
    for t in tensors:
        pad = longest - t.shape[dim]
        if pad:
            shape = list(t.shape)
            shape[dim] = pad
            t = torch.cat([t, t.new_full(shape, value)], dim=dim)
        padded.append(t)
    mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    return torch.stack(padded), mask
