"""Rooms of the synthetic dataset: shoebox geometry, the speakers' marks, image sources, late tail.

Room frame: metres, origin at a floor corner, X along the width, Y along the length, Z up. The
listener's head sits at ``RoomConfig.listener`` (floor coordinates) at ``ear_height`` above the
floor and is turned by a per-drama yaw; ``to_listener`` maps room points into the listener frame
of schema.py (x right, y front, z up, head at the origin).

Like MRSDrama's 5-12 fixed positions per room, every room has fixed *marks* (floor points where
speakers stand or sit), drawn once from the room's own seed, spread all around the listener.

Reverberation (optional): first/second-order image sources of the shoebox, each rendered like the
direct sound (own direction, HRIR, delay and Doppler), plus a diffuse late tail of exponentially
decaying noise (one independent noise per ear) whose level follows Sabine's room constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from isdrama.data.synth.geometry import SPEED_OF_SOUND

#: Sabine's constant (s/m): RT60 = SABINE * V / (S * alpha).
SABINE = 0.161
#: 60 dB of amplitude decay as a natural-log factor: exp(-LN_1000) = 1e-3.
LN_1000 = np.log(1000.0)


@dataclass(frozen=True)
class RoomConfig:
    """A shoebox room with a listener and fixed speaker marks."""

    name: str
    size: tuple[float, float, float]  #: width X, length Y, height Z (m)
    listener: tuple[float, float]  #: listener head position on the floor plan (m)
    rt60: float  #: reverberation time (s), used when reverb is on
    n_marks: int = 10  #: fixed speaker positions in this room
    mark_seed: int = 0  #: seed of the marks (fixed per room)
    wall_margin: float = 0.4  #: marks keep this far from the walls (m)
    mark_clearance: float = 0.3  #: marks lie this far inside the distance range (m)
    mark_jitter: float = 0.8  #: azimuth jitter of a mark, fraction of its sector


#: The default sets: two rooms of different size and reverberation.
DEFAULT_ROOMS = (
    RoomConfig("room1", size=(9.0, 8.0, 3.0), listener=(4.4, 3.6), rt60=0.35, n_marks=10, mark_seed=1),
    RoomConfig("room2", size=(13.0, 11.0, 3.5), listener=(6.2, 5.3), rt60=0.6, n_marks=12, mark_seed=2),
)


def _rotation(yaw: float) -> np.ndarray:
    """3x3 rotation by ``yaw`` about +z (counter-clockwise)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class RoomPlacement:
    """A room with its listener turned by ``listener_yaw`` (radians, counter-clockwise).

    Listener frame = R(-yaw) (room point - head position); head at ``ear_height`` above the floor.
    """

    room: RoomConfig
    listener_yaw: float
    ear_height: float

    @property
    def head(self) -> np.ndarray:
        return np.array([*self.room.listener, self.ear_height])

    def to_listener(self, points: np.ndarray) -> np.ndarray:
        """Room points (N, 3) -> listener frame (N, 3)."""
        return (np.asarray(points, dtype=np.float64) - self.head) @ _rotation(self.listener_yaw)

    def to_room(self, points: np.ndarray) -> np.ndarray:
        """Listener-frame points (N, 3) -> room frame (N, 3)."""
        return np.asarray(points, dtype=np.float64) @ _rotation(self.listener_yaw).T + self.head

    def image_maps(self, max_order: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Affine maps (A (3, 3), b (3,), order) taking a listener-frame point to each image.

        Excludes the direct path (order 0). Along an axis of length L, image n of coordinate u is
        2 * ceil(n / 2) * L + (-1)^n u, reached after |n| reflections.
        """
        rot = _rotation(self.listener_yaw)
        size = np.asarray(self.room.size, dtype=np.float64)
        maps = []
        for n in product(range(-max_order, max_order + 1), repeat=3):
            order = int(np.abs(n).sum())
            if order == 0 or order > max_order:
                continue
            n = np.asarray(n)
            sign = np.where(n % 2 == 0, 1.0, -1.0)
            shift = 2 * np.ceil(n / 2) * size
            # listener -> room -> mirror -> listener
            a = rot.T @ np.diag(sign) @ rot
            b = rot.T @ (np.diag(sign) @ self.head + shift - self.head)
            maps.append((a, b, order))
        return maps


def marks(room: RoomConfig, distance_range: tuple[float, float]) -> np.ndarray:
    """The room's fixed speaker marks on the floor plan, (n_marks, 2) room metres.

    Azimuths are stratified all around the listener; horizontal distances are uniform between
    ``distance_range`` limits and what the walls (minus the margin) allow on that bearing.
    """
    rng = np.random.default_rng(room.mark_seed)
    n = room.n_marks
    az = (np.arange(n) + 0.5 + room.mark_jitter * rng.uniform(-0.5, 0.5, size=n)) * 2 * np.pi / n
    direction = np.stack([np.cos(az), np.sin(az)], axis=-1)
    lo = np.asarray([room.wall_margin] * 2)
    hi = np.asarray(room.size[:2]) - room.wall_margin
    head = np.asarray(room.listener)
    with np.errstate(divide="ignore"):
        to_wall = np.where(direction > 0, (hi - head) / direction, (lo - head) / direction)
    wall_limit = np.min(np.where(np.isfinite(to_wall) & (to_wall > 0), to_wall, np.inf), axis=-1)
    d_min = distance_range[0] + room.mark_clearance
    d_max = np.minimum(distance_range[1] - room.mark_clearance, wall_limit)
    if np.any(d_max <= d_min):
        raise ValueError(
            f"room {room.name}: listener {room.listener} is too close to a wall for marks at >= {d_min:.2f} m"
        )
    dist = d_min + rng.uniform(size=n) * (d_max - d_min)
    return head + direction * dist[:, None]


def reflection_gain(rt60: float, size: tuple[float, float, float]) -> tuple[float, float]:
    """(amplitude reflection coefficient, room constant R) from Sabine's formula."""
    w, d, h = size
    volume, surface = w * d * h, 2 * (w * d + w * h + d * h)
    alpha = min(SABINE * volume / (surface * rt60), 0.99)
    return float(np.sqrt(1 - alpha)), float(surface * alpha / (1 - alpha))


def late_tail(room: RoomConfig, rng: np.random.Generator, sample_rate: int, mix_time: float) -> np.ndarray:
    """Diffuse late reverberation impulse responses (2, L) (left, right), starting at mix_time.

    Independent Gaussian noise per ear with an RT60 exponential decay, scaled so its energy is
    the Sabine reverberant energy ratio 16 pi / R (relative to the direct sound at 1 m) left
    after ``mix_time`` (the early reflections before it are rendered as image sources).
    """
    _, room_constant = reflection_gain(room.rt60, room.size)
    length = int(np.ceil((mix_time + room.rt60) * sample_rate))
    t = np.arange(length) / sample_rate
    envelope = np.where(t >= mix_time, np.exp(-LN_1000 * t / room.rt60), 0.0)
    noise = rng.standard_normal((2, length)) * envelope
    energy = 16 * np.pi / room_constant * np.exp(-2 * LN_1000 * mix_time / room.rt60)
    return noise * np.sqrt(energy / np.maximum(np.sum(noise**2, axis=-1, keepdims=True), 1e-20))


def mixing_time(placement: RoomPlacement, max_order: int) -> float:
    """Arrival time (s) after which the late tail takes over: the longest image path from the head."""
    far = max(np.linalg.norm(b) for _, b, _ in placement.image_maps(max_order)) if max_order else 0.0
    return float(far / SPEED_OF_SOUND)
