"""The one place pose is brought from its own rate (187.5 frames/s) to the model frame rate."""
from __future__ import annotations

import numpy as np

#: quaternion columns (qw, qx, qy, qz) of the 9-column pose
QUAT = slice(3, 7)


def resample_pose(pose: np.ndarray, src_rate: float, dst_rate: float) -> np.ndarray:
    """Resample a (T, 9) pose from ``src_rate`` to ``dst_rate`` frames/s.

    Positions and radial velocities are linearly interpolated at the destination frame times
    (frame k at k / dst_rate seconds); quaternions by normalised linear interpolation with sign
    alignment (q and -q are the same rotation). Output length: ceil(T * dst_rate / src_rate).
    """
    pose = np.asarray(pose, dtype=np.float64)
    n_src = pose.shape[0]
    n_dst = max(1, int(np.ceil(n_src * dst_rate / src_rate - 1e-9)))
    t = np.arange(n_dst) / dst_rate * src_rate  # destination times in source frames
    lo = np.clip(np.floor(t).astype(int), 0, n_src - 1)
    hi = np.clip(lo + 1, 0, n_src - 1)
    w = np.clip(t - lo, 0.0, 1.0)[:, None]
    out = (1 - w) * pose[lo] + w * pose[hi]
    q_lo, q_hi = pose[lo, QUAT], pose[hi, QUAT]
    sign = np.where((q_lo * q_hi).sum(1, keepdims=True) < 0, -1.0, 1.0)
    q = (1 - w) * q_lo + w * sign * q_hi
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out[:, QUAT] = np.where(norm > 1e-8, q / np.maximum(norm, 1e-8), q_lo)
    return out.astype(np.float32)
