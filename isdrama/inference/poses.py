"""A script line's pose prompt -> what the front end's branch takes, at the model frame rate.

- trajectory -> the 9-column geometric pose (the synthetic generator's piecewise-linear
  :class:`~isdrama.data.synth.trajectory.Trajectory`, so a script trajectory and a training
  trajectory are the same kind of path);
- pose_file -> the MRSDrama .npy (at ``POSE_FRAME_RATE``) resampled to the model frame rate;
- pose_text -> the sentence (text branch);
- video -> RGB frames sampled over the span (video branch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from isdrama.data.resample import output_length, resample_pose
from isdrama.data.schema import POSE_FRAME_RATE
from isdrama.data.synth.geometry import facing_yaw, wrap_angle
from isdrama.data.synth.trajectory import Trajectory, facing_listener_yaw
from isdrama.inference.script import Line, TrajectoryPose

#: the front-end branch each pose kind uses
BRANCH_OF_KIND = {"trajectory": "geo", "pose_file": "geo", "pose_text": "text", "video": "video"}


def trajectory_path(spec: TrajectoryPose, duration: float) -> Trajectory:
    """A script trajectory as a piecewise-linear path covering ``duration`` seconds (the last
    waypoint is held). Yaws: facing the listener, the walking direction (``path``), or fixed."""
    times = [w.t for w in spec.waypoints]
    positions = [np.asarray(w.position, dtype=np.float64) for w in spec.waypoints]
    if times[-1] < duration:
        times.append(float(duration))
        positions.append(positions[-1])
    if len(times) == 1:
        times, positions = [0.0, max(float(duration), 1e-3)], positions * 2
    if isinstance(spec.facing, (int, float)):
        yaws = [float(np.radians(spec.facing))] * len(times)
    elif spec.facing == "path":
        # a knot faces the way the path runs through it; a knot where nothing moves faces the listener
        yaws = []
        for i, p in enumerate(positions):
            around = positions[min(i + 1, len(positions) - 1)] - positions[max(i - 1, 0)]
            yaws.append(float(facing_yaw(around)) if np.linalg.norm(around[:2]) > 1e-6 else facing_listener_yaw(p))
    else:
        yaws = [facing_listener_yaw(p) for p in positions]
    yaws = np.asarray(yaws)
    yaws = yaws[0] + np.concatenate([[0.0], np.cumsum(wrap_angle(np.diff(yaws)))])  # short turns
    moving = any(np.linalg.norm(positions[i + 1] - positions[i]) > 1e-6 for i in range(len(positions) - 1))
    return Trajectory(
        times=np.asarray(times, dtype=np.float64),
        positions=np.stack(positions),
        yaws=yaws,
        posture=spec.posture,
        speed_class="scripted" if moving else None,
    )


def trajectory_pose(spec: TrajectoryPose, n_frames: int, frame_rate: float) -> np.ndarray:
    """(n_frames, 9) float32 pose of a script trajectory at ``frame_rate``."""
    return trajectory_path(spec, n_frames / frame_rate).pose(n_frames, frame_rate)


def file_pose(path, n_frames: Optional[int], frame_rate: float) -> np.ndarray:
    """(n_frames, 9) pose of an MRSDrama pose file resampled from ``POSE_FRAME_RATE``."""
    arr = np.load(path, allow_pickle=False).astype(np.float32)
    return resample_pose(arr, POSE_FRAME_RATE, frame_rate, n_frames)


def pose_file_frames(path, frame_rate: float) -> int:
    """Model frames a pose file covers."""
    return output_length(len(np.load(path, mmap_mode="r")), POSE_FRAME_RATE, frame_rate)


@dataclass
class PoseInput:
    """One line's pose prompt for the front end: exactly one of ``pose`` (T, 9), ``text`` or
    ``video`` ((F, 3, H, W) uint8) is set; ``branch`` names the branch that encodes it."""

    branch: str
    pose: Optional[torch.Tensor] = None
    text: Optional[str] = None
    video: Optional[torch.Tensor] = None


def line_pose_input(line: Line, n_frames: int, frame_rate: float, video_fps: float, video_size) -> PoseInput:
    """The :class:`PoseInput` of a script line generated with ``n_frames`` model frames."""
    kind = line.pose_kind
    if kind == "trajectory":
        return PoseInput("geo", pose=torch.from_numpy(trajectory_pose(line.trajectory, n_frames, frame_rate)))
    if kind == "pose_file":
        return PoseInput(
            "geo", pose=torch.from_numpy(np.ascontiguousarray(file_pose(line.pose_file, n_frames, frame_rate)))
        )
    if kind == "pose_text":
        return PoseInput("text", text=line.pose_text)
    from isdrama.data.video_frames import VideoFrameCache

    frames = VideoFrameCache(None, video_fps, tuple(video_size)).get(line.video.path, line.video.start, line.video.end)
    return PoseInput("video", video=torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous())


__all__ = [
    "BRANCH_OF_KIND",
    "PoseInput",
    "file_pose",
    "line_pose_input",
    "pose_file_frames",
    "trajectory_path",
    "trajectory_pose",
]
