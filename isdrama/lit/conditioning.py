"""The LightningModules' side of the conditioning front end: a :class:`DramaBatch` -> the
tensors :class:`~isdrama.models.conditioning.ConditioningFrontEnd` takes, and the video
standardiser fitted over a data loader."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from isdrama.data.dataset import DramaBatch
from isdrama.models.conditioning import ConditioningFrontEnd
from isdrama.utils.distributed import gather_lists


def frontend_inputs(batch: DramaBatch, with_chunks: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``ConditioningFrontEnd.forward`` from a batch (ground-truth durations)."""
    if batch.content_ids is None:
        raise ValueError("the batch has no content tokens: set data.content_tokenizer (e.g. mode: auto)")
    return {
        "tokens": batch.content_ids,
        "token_mask": batch.content_mask,
        "frame_mask": batch.mask,
        "durations": batch.content_frames,
        "pose": batch.pose,
        "pose_present": batch.pose_mask,
        "video": batch.video,
        "video_mask": batch.video_mask,
        "prompts": list(batch.pose_prompts),
        "keys": list(batch.keys),
        "with_chunks": with_chunks,
    }


@torch.no_grad()
def fit_video_norm(frontend: ConditioningFrontEnd, batches: Iterable[DramaBatch], device: torch.device) -> None:
    """Fit the front end's video standardiser on the backbone features of ``batches`` (all
    ranks' statistics under torch.distributed); fills the feature cache on the way."""
    parts = []
    for batch in batches:
        if batch.video is None:
            continue
        batch = batch.to(device)
        parts.append(frontend.video_feature_moments(batch.video, batch.video_mask, list(batch.keys)).cpu())
    frontend.fit_video_norm(gather_lists(parts))


__all__ = ["frontend_inputs", "fit_video_norm"]
