"""Frame-rate conversion of per-frame signals: THE one place pose (and other frame-level
tracks such as F0) are brought to the codec frame rate.

Frame k of a stream at rate r sits at time k / r seconds. Resampling reads the source at
source-frame positions k * src_rate / dst_rate by linear interpolation, holding the first and
last source frame beyond the ends. Quaternions are interpolated by normalised lerp on the
shorter arc (the second quaternion is negated when the two point into opposite hemispheres).
Linear interpolation does not low-pass: fine for smooth trajectories, not for audio.
"""

from __future__ import annotations

import math
from typing import Optional, TypeVar

import numpy as np
import torch

from isdrama.data.schema import POSE_COLUMNS

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: Column slices of the 9-column pose (schema.POSE_COLUMNS).
POSE_QUAT = slice(3, 7)


def output_length(n_src: int, src_rate: float, dst_rate: float) -> int:
    """Default resampled length: ceil(n_src * dst_rate / src_rate) (covers the span), >= 1."""
    return max(1, math.ceil(n_src * dst_rate / src_rate - 1e-9))


def _positions(
    n_src: int, n_dst: int, src_rate: float, dst_rate: float, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"frame rates must be > 0, got src={src_rate}, dst={dst_rate}")
    if n_src < 1:
        raise ValueError("cannot resample an empty track (0 frames)")
    pos = torch.arange(n_dst, dtype=torch.float64, device=device) * (src_rate / dst_rate)
    pos = pos.clamp(0.0, n_src - 1)
    i0 = pos.floor().to(torch.long).clamp_max(n_src - 1)
    i1 = (i0 + 1).clamp_max(n_src - 1)
    return i0, i1, (pos - i0.to(torch.float64))[:, None]


def _as_torch(x: ArrayT) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64), True
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64), False
    raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")


def _back(y: torch.Tensor, like: ArrayT, was_numpy: bool) -> ArrayT:
    if was_numpy:
        return y.numpy().astype(like.dtype if like.dtype.kind == "f" else np.float32)
    return y.to(like.dtype if like.is_floating_point() else torch.float32)


def resample_linear(x: ArrayT, src_rate: float, dst_rate: float, n_frames: Optional[int] = None) -> ArrayT:
    """Linearly resample x (..., T, C) from src_rate to dst_rate -> (..., n_frames, C)."""
    t, was_numpy = _as_torch(x)
    if t.dim() < 2:
        raise ValueError(f"expected (..., T, C), got shape {tuple(t.shape)}")
    n_src = t.shape[-2]
    n_dst = output_length(n_src, src_rate, dst_rate) if n_frames is None else int(n_frames)
    i0, i1, w = _positions(n_src, n_dst, src_rate, dst_rate, t.device)
    y = t[..., i0, :] * (1 - w) + t[..., i1, :] * w
    return _back(y, x, was_numpy)


def resample_pose(pose: ArrayT, src_rate: float, dst_rate: float, n_frames: Optional[int] = None) -> ArrayT:
    """Resample a geometric pose (..., T, 9) (schema.POSE_COLUMNS) to dst_rate.

    Positions and radial velocities: linear interpolation. Quaternions (qw, qx, qy, qz):
    normalised lerp on the shorter arc, so outputs are unit quaternions.

    Args:
        pose: numpy array or torch tensor (..., T, 9); the same type comes back.
        src_rate, dst_rate: frames per second (e.g. schema.POSE_FRAME_RATE -> 75.0).
        n_frames: output length; default ceil(T * dst_rate / src_rate). Pass the codec-frame
            count of the line so pose and audio frames align exactly.

    Returns float32 for integer input, else the input's float dtype.
    """
    t, was_numpy = _as_torch(pose)
    if t.dim() < 2 or t.shape[-1] != len(POSE_COLUMNS):
        raise ValueError(
            f"pose must have shape (..., T, {len(POSE_COLUMNS)}) with columns "
            f"{', '.join(POSE_COLUMNS)}; got {tuple(t.shape)}"
        )
    n_src = t.shape[-2]
    n_dst = output_length(n_src, src_rate, dst_rate) if n_frames is None else int(n_frames)
    i0, i1, w = _positions(n_src, n_dst, src_rate, dst_rate, t.device)
    a, b = t[..., i0, :], t[..., i1, :]
    y = a * (1 - w) + b * w
    qa, qb = a[..., POSE_QUAT], b[..., POSE_QUAT]
    sign = torch.where((qa * qb).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(qb.dtype)
    q = qa * (1 - w) + qb * sign * w
    norm = q.norm(dim=-1, keepdim=True)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=q.dtype, device=q.device)
    q = torch.where(norm > 1e-12, q / norm.clamp_min(1e-12), identity)
    y = torch.cat([y[..., : POSE_QUAT.start], q, y[..., POSE_QUAT.stop :]], dim=-1)
    return _back(y, pose, was_numpy)
