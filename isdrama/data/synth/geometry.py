"""Listener-frame geometry shared by the synthetic generator.

Listener frame (schema.py): metres, x right, y front, z up, head centre at the origin facing +y,
ears at ``schema.EAR_POSITIONS`` (x = -/+0.11 m, z = 0). Azimuths in this module are measured
*clockwise* from the front in degrees (0 front, +90 right, 180 back, -90 left), which is how a
prompt names directions; SOFA files use counter-clockwise azimuths (+90 = left), converted by
``sofa_to_listener``.

A speaker's head orientation is a yaw about +z: yaw 0 faces +y (the listener's own facing), a
positive yaw turns counter-clockwise (towards -x). Its quaternion (w, x, y, z) rotates the
speaker's local frame (facing +y) into the listener frame.
"""

from __future__ import annotations

import numpy as np

from isdrama.data.schema import EAR_POSITIONS

#: Speed of sound in air at about 20 degrees C (m/s).
SPEED_OF_SOUND = 343.0


def ear_vectors(positions: np.ndarray) -> np.ndarray:
    """Vectors from each ear to each position: (T, 3) -> (T, 2, 3) (left, right)."""
    positions = np.asarray(positions, dtype=np.float64)
    return positions[:, None, :] - EAR_POSITIONS[None, :, :]


def ear_distances(positions: np.ndarray) -> np.ndarray:
    """Distance from each position to the left and right ear: (T, 3) -> (T, 2) metres."""
    return np.linalg.norm(ear_vectors(positions), axis=-1)


def radial_velocities(positions: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """d|p - ear|/dt per ear for positions and velocities (T, 3) -> (T, 2) m/s (+ = receding)."""
    vec = ear_vectors(positions)
    dist = np.maximum(np.linalg.norm(vec, axis=-1), 1e-9)
    return np.einsum("tec,tc->te", vec, np.asarray(velocities, dtype=np.float64)) / dist


def azimuth_cw(positions: np.ndarray) -> np.ndarray:
    """Clockwise azimuth from the front in degrees, (T, 3) -> (T,), in (-180, 180]."""
    positions = np.atleast_2d(positions)
    return np.degrees(np.arctan2(positions[:, 0], positions[:, 1]))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Normalise vectors along the last axis (zero vectors stay zero)."""
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12)


def sofa_to_listener(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """SOFA spherical directions (azimuth counter-clockwise, +90 = left) -> unit vectors (M, 3)."""
    az = np.radians(np.asarray(azimuth_deg, dtype=np.float64))
    el = np.radians(np.asarray(elevation_deg, dtype=np.float64))
    return np.stack([-np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)], axis=-1)


def sofa_cartesian_to_listener(xyz: np.ndarray) -> np.ndarray:
    """SOFA cartesian (x front, y left, z up) -> listener frame (x right, y front, z up)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return np.stack([-xyz[..., 1], xyz[..., 0], xyz[..., 2]], axis=-1)


def yaw_facing(yaw: np.ndarray) -> np.ndarray:
    """Facing unit vector of a yaw (T,) -> (T, 3); yaw 0 faces +y, positive turns towards -x."""
    yaw = np.asarray(yaw, dtype=np.float64)
    return np.stack([-np.sin(yaw), np.cos(yaw), np.zeros_like(yaw)], axis=-1)


def facing_yaw(direction: np.ndarray) -> np.ndarray:
    """Yaw (radians) that faces a horizontal direction (..., 3) -> (...)."""
    direction = np.asarray(direction, dtype=np.float64)
    return np.arctan2(-direction[..., 0], direction[..., 1])


def yaw_quaternion(yaw: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by ``yaw`` about +z: (T,) -> (T, 4)."""
    half = 0.5 * np.asarray(yaw, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([np.cos(half), zeros, zeros, np.sin(half)], axis=-1)


def quaternion_facing(quat: np.ndarray) -> np.ndarray:
    """Facing vector (the rotated local +y axis) of quaternions (T, 4) (w, x, y, z) -> (T, 3)."""
    w, x, y, z = np.moveaxis(np.asarray(quat, dtype=np.float64), -1, 0)
    return np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], axis=-1)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap radians to (-pi, pi]."""
    return -(np.mod(-np.asarray(angle) + np.pi, 2 * np.pi) - np.pi)
