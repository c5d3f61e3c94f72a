"""Speaker mouth trajectories for one line and their 9-column geometric pose.

Height convention: the listener frame's origin is the centre of the listener's head (between the
ears) at ``MotionConfig.listener_ear_height`` above the floor (1.2 m: a seated listener, or a
binaural dummy head on a stand). A standing speaker's mouth is 1.5-1.7 m above the floor
(z = +0.3..+0.5 m), a sitting speaker's 1.05-1.2 m (z = -0.15..0 m).

A ``Trajectory`` is piecewise linear in time: knots (K,) seconds from the line start with mouth
positions (K, 3) and head yaws (K,), held constant before the first and after the last knot.
Walks run at constant speed between two marks; the speaker turns to the walking direction
while starting and turns back towards the listener after arriving. Static speakers face the
listener within a random offset. The pose rows sample this same path, so the pose, the rendered
audio and the video all describe one geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from isdrama.data.schema import POSE_FRAME_RATE, POSE_HOP
from isdrama.data.synth.geometry import facing_yaw, radial_velocities, wrap_angle, yaw_facing, yaw_quaternion

POSTURES = ("standing", "sitting")


@dataclass(frozen=True)
class MotionConfig:
    """Heights, distances, speeds and choices of motion (metres, seconds, m/s)."""

    listener_ear_height: float = 1.2
    standing_mouth_height: tuple[float, float] = (1.5, 1.7)
    sitting_mouth_height: tuple[float, float] = (1.05, 1.2)
    distance_range: tuple[float, float] = (0.5, 6.0)  #: mouth to head centre, 3-D
    sitting_probability: float = 0.35  #: per speaker and drama
    walk_probability: float = 0.45  #: per line of a standing speaker
    speed_classes: tuple[tuple[str, float, float], ...] = (
        ("slow", 0.35, 0.7),
        ("normal", 0.8, 1.3),
        ("fast", 1.5, 2.1),
    )
    min_walk: float = 0.8  #: shorter walks are not worth a [DYNAMIC] prompt
    walk_margin: float = 0.15  #: no walking in the first/last seconds of a line
    turn_time: float = 0.4  #: time to turn the head at the start/end of a walk
    facing_jitter_deg: float = 35.0  #: static speakers face the listener within +- this


@dataclass(frozen=True)
class Trajectory:
    """Piecewise-linear mouth path of one line in the listener frame (see module docstring).

    times: (K,) strictly increasing seconds; positions: (K, 3); yaws: (K,) radians, unwrapped
    (consecutive differences in (-pi, pi]); speed_class: None for a static line.
    """

    times: np.ndarray
    positions: np.ndarray
    yaws: np.ndarray
    posture: str
    speed_class: Optional[str] = None
    speed: float = 0.0

    def __post_init__(self) -> None:
        if len(self.times) != len(self.positions) or len(self.times) != len(self.yaws):
            raise ValueError("Trajectory: times, positions and yaws differ in length")
        if len(self.times) > 1 and np.any(np.diff(self.times) <= 0):
            raise ValueError(f"Trajectory: knot times must increase strictly, got {self.times}")
        if self.posture not in POSTURES:
            raise ValueError(f"Trajectory: posture must be one of {POSTURES}, got {self.posture!r}")

    @property
    def is_dynamic(self) -> bool:
        return self.speed_class is not None

    @property
    def start(self) -> np.ndarray:
        return self.positions[0]

    @property
    def end(self) -> np.ndarray:
        return self.positions[-1]

    def position_at(self, t: np.ndarray) -> np.ndarray:
        """Mouth positions at times t (N,) -> (N, 3)."""
        t = np.asarray(t, dtype=np.float64)
        return np.stack([np.interp(t, self.times, self.positions[:, c]) for c in range(3)], axis=-1)

    def velocity_at(self, t: np.ndarray) -> np.ndarray:
        """Mouth velocities (N, 3): the velocity of the segment holding t (0 outside the knots)."""
        t = np.asarray(t, dtype=np.float64)
        if len(self.times) < 2:
            return np.zeros((len(t), 3))
        seg_v = np.diff(self.positions, axis=0) / np.diff(self.times)[:, None]  # (K-1, 3)
        k = np.searchsorted(self.times, t, side="right") - 1
        inside = (k >= 0) & (k < len(seg_v))
        return np.where(inside[:, None], seg_v[np.clip(k, 0, len(seg_v) - 1)], 0.0)

    def yaw_at(self, t: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(t, dtype=np.float64), self.times, self.yaws)

    def facing_at(self, t: np.ndarray) -> np.ndarray:
        """Facing unit vectors (N, 3)."""
        return yaw_facing(self.yaw_at(t))

    def pose(self, n_frames: int, frame_rate: float = POSE_FRAME_RATE) -> np.ndarray:
        """(n_frames, 9) float32 rows x, y, z, qw, qx, qy, qz, v_rad_left, v_rad_right at i / frame_rate."""
        t = np.arange(n_frames) / frame_rate
        pos = self.position_at(t)
        quat = yaw_quaternion(wrap_angle(self.yaw_at(t)))
        v_rad = radial_velocities(pos, self.velocity_at(t))
        return np.concatenate([pos, quat, v_rad], axis=1).astype(np.float32)


def pose_frames(n_samples: int) -> int:
    """Pose frames of a wav of n_samples at 48 kHz: centred hops, n // 256 + 1 (like a mel)."""
    return n_samples // POSE_HOP + 1


def _knots(times: list[float], positions: list[np.ndarray], yaws: list[float]) -> tuple:
    """Drop knots that do not advance in time; unwrap yaws so turns take the short way."""
    keep = [0] + [i for i in range(1, len(times)) if times[i] > times[i - 1] + 1e-9]
    t = np.asarray([times[i] for i in keep])
    p = np.asarray([positions[i] for i in keep], dtype=np.float64)
    y = np.asarray([yaws[i] for i in keep], dtype=np.float64)
    y = y[0] + np.concatenate([[0.0], np.cumsum(wrap_angle(np.diff(y)))])
    return t, p, y


def facing_listener_yaw(position: np.ndarray) -> float:
    """Yaw that faces the listener's head from ``position`` (3,)."""
    return float(facing_yaw(np.array([-position[0], -position[1], 0.0])))


def static_trajectory(position: np.ndarray, yaw: float, posture: str, duration: float) -> Trajectory:
    """A speaker who stays at ``position`` (3,) facing ``yaw`` for ``duration`` seconds."""
    p = np.asarray(position, dtype=np.float64)
    return Trajectory(
        times=np.array([0.0, duration]), positions=np.stack([p, p]), yaws=np.array([yaw, yaw]), posture=posture
    )


def walk_trajectory(
    start: np.ndarray,
    end: np.ndarray,
    speed: float,
    t_start: float,
    duration: float,
    yaw_before: float,
    speed_class: str,
    cfg: MotionConfig,
) -> Trajectory:
    """Stand at ``start`` until ``t_start``, walk to ``end`` at ``speed``, then face the listener.

    The walk must end by ``duration``.
    """
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    t_end = t_start + np.linalg.norm(end - start) / speed
    if t_end > duration + 1e-9:
        raise ValueError(f"walk of {t_end - t_start:.2f} s does not fit before {duration:.2f} s")
    heading = float(facing_yaw(end - start))
    turn_end = min(t_start + cfg.turn_time, t_end)
    at_turn = start + (end - start) * (turn_end - t_start) / max(t_end - t_start, 1e-9)
    times = [0.0, t_start, turn_end, t_end]
    positions = [start, start, at_turn, end]
    yaws = [yaw_before, yaw_before, heading, heading]
    final = facing_listener_yaw(end)
    times.append(min(t_end + cfg.turn_time, duration))
    positions.append(end)
    yaws.append(final)
    times.append(duration)
    positions.append(end)
    yaws.append(final)
    t, p, y = _knots(times, positions, yaws)
    return Trajectory(times=t, positions=p, yaws=y, posture="standing", speed_class=speed_class, speed=speed)


def segment_min_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest distance from the origin (head centre) to the segment a-b."""
    ab = b - a
    s = np.clip(-np.dot(a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(a + s * ab))


@dataclass
class SpeakerState:
    """Where a speaker is between lines: position (3,) in the listener frame, yaw, posture, and
    the mark it stands on (None after a walk that stopped between marks)."""

    position: np.ndarray
    yaw: float
    posture: str
    mark: Optional[int]
    mouth_height: float = 0.0


def plan_line(
    rng: np.random.Generator,
    state: SpeakerState,
    mark_positions: np.ndarray,
    occupied: set[int],
    duration: float,
    cfg: MotionConfig,
) -> tuple[Trajectory, Optional[int]]:
    """Motion of a speaker during one line: a walk to a free mark, or staying put.

    mark_positions: (M, 3) listener-frame mouth positions of the marks at this speaker's height.
    Returns the trajectory and the mark the speaker ends on (None if it stops between marks).
    """
    static = static_trajectory(state.position, state.yaw, state.posture, duration)
    if state.posture != "standing" or rng.random() >= cfg.walk_probability:
        return static, state.mark
    name, v_lo, v_hi = cfg.speed_classes[int(rng.integers(len(cfg.speed_classes)))]
    speed = float(rng.uniform(v_lo, v_hi))
    available = duration - 2 * cfg.walk_margin
    order = rng.permutation(len(mark_positions))
    for m in order:
        if m == state.mark or m in occupied:
            continue
        target = mark_positions[m]
        if segment_min_distance(state.position, target) < cfg.distance_range[0]:
            continue
        length = float(np.linalg.norm(target - state.position))
        reach = min(length, speed * available)
        if reach < cfg.min_walk:
            continue
        end = state.position + (target - state.position) * (reach / length)
        slack = available - reach / speed
        t_start = cfg.walk_margin + float(rng.uniform(0.0, max(slack, 0.0)))
        traj = walk_trajectory(state.position, end, speed, t_start, duration, state.yaw, name, cfg)
        return traj, (int(m) if reach >= length - 1e-9 else None)
    return static, state.mark
