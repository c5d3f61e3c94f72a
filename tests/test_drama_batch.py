"""DramaBatch.to moves every tensor, also those inside list fields."""

from __future__ import annotations

import torch

from isdrama.data.dataset import DramaBatch


def test_to_moves_tensors_and_lists_of_tensors():
    batch = DramaBatch(
        keys=["a", "b"],
        frames=torch.tensor([3, 2]),
        mask=torch.ones(2, 3, dtype=torch.bool),
        speaker_ids=torch.tensor([0, 1]),
        drama_ids=torch.tensor([0, 0]),
        scene_ids=torch.tensor([-1, -1]),
        texts=["x", "y"],
        languages=["en", "en"],
        pose_prompts=[None, "[STATIC] front"],
        words=[["x"], ["y"]],
        word_frames=[torch.tensor([3]), torch.tensor([2])],
        pose=torch.zeros(2, 3, 9),
    )
    moved = batch.to("meta")  # a device without data: any tensor left behind stays on the CPU
    assert moved is batch
    assert {t.device.type for t in (batch.frames, batch.mask, batch.pose, *batch.word_frames)} == {"meta"}
    assert batch.keys == ["a", "b"] and batch.pose_prompts == [None, "[STATIC] front"]
    assert batch.words == [["x"], ["y"]] and batch.tokens is None
