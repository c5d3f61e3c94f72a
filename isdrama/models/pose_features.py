"""Per-frame features of the 9-column geometric pose for the geometric branch.

From ``x, y, z, qw, qx, qy, qz, v_rad_left, v_rad_right`` (schema.POSE_COLUMNS; listener-centric
metres, ears at x = -/+0.11 m) each frame gives, in this order:

====================  =====  ========================================================
mouth - left ear      3      (xyz - ear_left) / position_scale
mouth - right ear     3      (xyz - ear_right) / position_scale
quaternion            4      (qw, qx, qy, qz) normalised, sign fixed so qw >= 0
radial velocities     2      v_rad / velocity_scale (left, right ear)
distances (optional)  2      |xyz - ear| / position_scale (left, right ear)
====================  =====  ========================================================

The scales are fixed (documented defaults, no running statistics), so features are identical
at training and inference and across datasets.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from isdrama.data.schema import EAR_POSITIONS, POSE_COLUMNS


class GeometricFeatures(nn.Module):
    """Pose (..., T, 9) -> features (..., T, F) with F = 12, or 14 with distances.

    Args:
        ear_positions: ((xl, yl, zl), (xr, yr, zr)) metres [schema.EAR_POSITIONS].
        position_scale: metres per unit of the position/distance features [2.0].
        velocity_scale: m/s per unit of the radial-velocity features [1.0].
        include_distance: append the two ear distances [True].
    """

    def __init__(
        self,
        ear_positions: Sequence[Sequence[float]] = tuple(map(tuple, EAR_POSITIONS)),
        position_scale: float = 2.0,
        velocity_scale: float = 1.0,
        include_distance: bool = True,
    ):
        super().__init__()
        ears = torch.as_tensor(ear_positions, dtype=torch.float32)
        if ears.shape != (2, 3):
            raise ValueError(f"ear_positions must be 2 x 3 (left, right; xyz), got {tuple(ears.shape)}")
        if position_scale <= 0 or velocity_scale <= 0:
            raise ValueError("position_scale and velocity_scale must be > 0")
        self.register_buffer("ears", ears, persistent=False)
        self.position_scale = float(position_scale)
        self.velocity_scale = float(velocity_scale)
        self.include_distance = include_distance

    @property
    def dim(self) -> int:
        return 14 if self.include_distance else 12

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.shape[-1] != len(POSE_COLUMNS):
            raise ValueError(
                f"pose must have {len(POSE_COLUMNS)} columns ({', '.join(POSE_COLUMNS)}), got shape {tuple(pose.shape)}"
            )
        pose = pose.to(self.ears.dtype)
        xyz = pose[..., None, 0:3]  # (..., T, 1, 3)
        rel = xyz - self.ears  # (..., T, 2, 3)
        q = pose[..., 3:7]
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        q = torch.where(q[..., :1] < 0, -q, q)
        parts = [
            rel[..., 0, :] / self.position_scale,
            rel[..., 1, :] / self.position_scale,
            q,
            pose[..., 7:9] / self.velocity_scale,
        ]
        if self.include_distance:
            parts.append(rel.norm(dim=-1) / self.position_scale)
        return torch.cat(parts, dim=-1)
