"""A fixed-camera video of a whole drama, drawn with OpenCV (24 fps, mp4v).

The camera is a pinhole placed behind and above the listener (listener frame: x right, y front,
z up, head at the origin) looking down over the listening area. Each speaker is drawn at its true
mouth position and height: a body from the floor to the shoulders, a head whose shape and colour
identify the speaker (fixed per speaker id, so the same speaker looks the same in every drama), a
nose stroke along the facing direction, and a white mouth whose size follows the speech envelope
while the speaker talks, and a white ring of constant width around the head for the whole span of
each of the speaker's lines (who is talking stays visible at the 64-pixel frames of the tiny
models, as lip and gesture motion is in real video; constant, so a static talker does not look
like a moving one; ``talk_ring`` 0 draws none). The listener is a grey head with a nose towards +y; the floor carries a
1 m grid for depth. Figures are painted far to near.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from isdrama.data.synth.geometry import unit, yaw_facing
from isdrama.utils.io import atomic_path

#: Distinct BGR colours, indexed by speaker number.
PALETTE = (
    (60, 60, 230),
    (230, 140, 40),
    (60, 200, 60),
    (40, 200, 230),
    (200, 60, 200),
    (200, 200, 60),
    (130, 90, 240),
    (90, 160, 120),
    (240, 120, 160),
    (30, 120, 200),
    (160, 160, 160),
    (100, 60, 140),
)
LISTENER_COLOUR, NOSE_COLOUR, MOUTH_COLOUR = (180, 180, 180), (230, 230, 230), (255, 255, 255)
#: Polygon heads are drawn on a circle this much larger than a round head (similar area).
POLYGON_SCALE = 1.15
#: Points closer to the camera plane than this (m) are not drawn.
MIN_DEPTH = 0.1
#: Head shapes as polygon vertex counts (0 = circle), indexed by speaker number // len(PALETTE) + n.
SHAPES = (0, 4, 3, 5, 6)


@dataclass(frozen=True)
class VideoConfig:
    """Frame size, rate, camera and figure proportions (metres)."""

    width: int = 224
    height: int = 224
    fps: float = 24.0
    camera_position: tuple[float, float, float] = (0.0, -3.0, 8.0)
    camera_target: tuple[float, float, float] = (0.0, -0.2, -1.2)
    fov_deg: float = 80.0  #: horizontal field of view
    grid_extent: float = 6.5  #: floor grid drawn over +- this many metres
    grid_step: float = 1.0
    head_radius: float = 0.22  #: figures are drawn larger than life to stay visible
    body_width: float = 0.45
    nose_length: float = 0.45
    mouth_radius: float = 0.12
    talk_ring: float = 0.15  #: width of the ring around the head during a line
    shoulder_drop: float = 0.2  #: shoulders this far below the mouth
    head_above_mouth: float = 0.13  #: head centre this far above the mouth
    stroke: float = 0.04  #: width of the nose strokes
    listener_radius: float = 0.12  #: the listener's head marker
    background: tuple[int, int, int] = (40, 35, 30)
    floor_colour: tuple[int, int, int] = (70, 70, 70)
    codec: str = "mp4v"


@dataclass(frozen=True)
class FigureTrack:
    """One speaker sampled at every video frame.

    positions: (F, 3) mouth positions (listener frame); yaws: (F,) radians; mouth: (F,) mouth
    opening 0..1 (0 = silent); identity: speaker number (picks colour and head shape);
    talking: (F,) bool, inside one of the speaker's lines (None: where the mouth is open).
    """

    identity: int
    positions: np.ndarray
    yaws: np.ndarray
    mouth: np.ndarray
    talking: Optional[np.ndarray] = None


class Camera:
    """Pinhole camera: project listener-frame points (N, 3) to pixels (N, 2) and depths (N,)."""

    def __init__(self, cfg: VideoConfig):
        self.position = np.asarray(cfg.camera_position, dtype=np.float64)
        forward = unit(np.asarray(cfg.camera_target, dtype=np.float64) - self.position)
        right = unit(np.cross(forward, [0.0, 0.0, 1.0]))
        up = np.cross(right, forward)
        self.basis = np.stack([right, up, forward])  # rows: camera axes
        self.focal = (cfg.width / 2) / np.tan(np.radians(cfg.fov_deg) / 2)
        self.centre = np.array([cfg.width / 2, cfg.height / 2])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = (np.atleast_2d(points) - self.position) @ self.basis.T
        depth = cam[:, 2]
        safe = np.maximum(depth, 1e-6)
        px = self.centre + self.focal * np.stack([cam[:, 0] / safe, -cam[:, 1] / safe], axis=-1)
        return px, depth

    def scale(self, size: float, depth: float) -> int:
        """Pixel size of a length ``size`` (m) at ``depth`` (m), at least 1."""
        return max(int(round(self.focal * size / max(depth, 1e-6))), 1)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _background(cfg: VideoConfig, camera: Camera, floor_z: float) -> np.ndarray:
    import cv2

    img = np.empty((cfg.height, cfg.width, 3), dtype=np.uint8)
    img[:] = cfg.background
    ticks = np.arange(-cfg.grid_extent, cfg.grid_extent + 1e-9, cfg.grid_step)
    for a in ticks:
        for seg in (
            np.array([[a, -cfg.grid_extent, floor_z], [a, cfg.grid_extent, floor_z]]),
            np.array([[-cfg.grid_extent, a, floor_z], [cfg.grid_extent, a, floor_z]]),
        ):
            ends = np.linspace(seg[0], seg[1], 40)
            px, depth = camera.project(ends)
            ok = depth > MIN_DEPTH
            for i in range(len(ends) - 1):
                if ok[i] and ok[i + 1]:
                    cv2.line(img, _pt(px[i]), _pt(px[i + 1]), cfg.floor_colour, 1, cv2.LINE_AA)
    listener, depth = camera.project(np.array([[0.0, 0.0, 0.0], [0.0, 2 * cfg.listener_radius, 0.0]]))
    cv2.circle(img, _pt(listener[0]), camera.scale(cfg.listener_radius, depth[0]), LISTENER_COLOUR, -1, cv2.LINE_AA)
    cv2.line(img, _pt(listener[0]), _pt(listener[1]), LISTENER_COLOUR, camera.scale(cfg.stroke, depth[0]), cv2.LINE_AA)
    return img


def _head(img: np.ndarray, centre: np.ndarray, radius: int, colour, shape: int) -> None:
    import cv2

    if shape == 0:
        cv2.circle(img, _pt(centre), radius, colour, -1, cv2.LINE_AA)
        return
    angles = -np.pi / 2 + 2 * np.pi * np.arange(shape) / shape
    poly = centre + radius * POLYGON_SCALE * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    cv2.fillPoly(img, [np.round(poly).astype(np.int32)], colour, cv2.LINE_AA)


def _figure_points(track: FigureTrack, cfg: VideoConfig, floor_z: float) -> np.ndarray:
    """Key points (F, 5, 3) per frame: floor, shoulders, head centre, nose tip, mouth."""
    mouth = track.positions
    facing = yaw_facing(track.yaws)
    head = mouth + np.array([0.0, 0.0, cfg.head_above_mouth])
    floor = np.concatenate([mouth[:, :2], np.full((len(mouth), 1), floor_z)], axis=1)
    return np.stack(
        [
            floor,
            mouth - np.array([0.0, 0.0, cfg.shoulder_drop]),
            head,
            head + cfg.nose_length * facing,
            mouth + cfg.head_radius * facing,
        ],
        axis=1,
    )


def _draw_figure(
    img: np.ndarray,
    camera: Camera,
    cfg: VideoConfig,
    identity: int,
    px: np.ndarray,
    depth: np.ndarray,
    opening: float,
    talking: bool,
) -> None:
    """Paint one figure from its projected key points px (5, 2) and depths (5,)."""
    import cv2

    if np.any(depth < MIN_DEPTH):
        return
    colour = PALETTE[identity % len(PALETTE)]
    shape = SHAPES[(identity // len(PALETTE) + identity) % len(SHAPES)]
    cv2.line(img, _pt(px[0]), _pt(px[1]), colour, camera.scale(cfg.body_width, depth[1]), cv2.LINE_AA)
    cv2.line(img, _pt(px[2]), _pt(px[3]), NOSE_COLOUR, camera.scale(cfg.stroke, depth[2]), cv2.LINE_AA)
    head_px = camera.scale(cfg.head_radius, depth[2])
    if talking and cfg.talk_ring > 0:  # drawn first: the head covers its inner edge
        ring = camera.scale(cfg.talk_ring, depth[2])
        cv2.circle(img, _pt(px[2]), head_px + ring // 2, MOUTH_COLOUR, ring, cv2.LINE_AA)
    _head(img, px[2], head_px, colour, shape)
    if opening > 0:
        cv2.circle(img, _pt(px[4]), camera.scale(cfg.mouth_radius * opening, depth[4]), MOUTH_COLOUR, -1, cv2.LINE_AA)


def iter_frames(
    tracks: list[FigureTrack], n_frames: int, floor_z: float, cfg: VideoConfig = VideoConfig()
) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 BGR, one per video frame; ``floor_z`` = floor height in the listener frame."""
    camera = Camera(cfg)
    base = _background(cfg, camera, floor_z)
    projected = []
    for track in tracks:
        points = _figure_points(track, cfg, floor_z)[:n_frames]
        px, depth = camera.project(points.reshape(-1, 3))
        projected.append((px.reshape(n_frames, -1, 2), depth.reshape(n_frames, -1)))
    for f in range(n_frames):
        img = base.copy()
        order = np.argsort([-depth[f, 0] for _, depth in projected], kind="stable")  # far first
        for i in order:
            px, depth = projected[i]
            track = tracks[i]
            talking = bool(track.talking[f]) if track.talking is not None else track.mouth[f] > 0
            _draw_figure(img, camera, cfg, track.identity, px[f], depth[f], float(track.mouth[f]), talking)
        yield img


def write_video(path: Path | str, frames: Iterable[np.ndarray], cfg: VideoConfig = VideoConfig()) -> None:
    """Write BGR frames (H, W, 3) as an mp4 atomically (temporary .mp4 name, then rename)."""
    import cv2

    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*cfg.codec), cfg.fps, (cfg.width, cfg.height))
        if not writer.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot open a '{cfg.codec}' video writer")
        try:
            for frame in frames:
                writer.write(frame)
        finally:
            writer.release()
        if tmp.stat().st_size == 0:
            raise RuntimeError(f"{path}: OpenCV wrote an empty video")
