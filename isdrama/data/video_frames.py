"""Video frames for the pose encoder's video branch: sampled at a fixed rate, decoded lazily, cached.

Frames of a line are taken from the drama video over the line's time span (``start``..``end``
seconds) at ``fps`` (4 in the paper), resized to ``size`` and cached on disk as uint8 .npy so a
video is decoded once per (span, rate, size).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Optional

import numpy as np

from isdrama.data.schema import DataError
from isdrama.utils.io import atomic_save_npy


def sample_times(start: float, end: float, fps: float) -> np.ndarray:
    """Frame times (s) at ``fps`` covering [start, end): one per 1/fps, centred in its slot; at least one."""
    n = max(1, math.ceil((end - start) * fps - 1e-9))
    return start + (np.arange(n) + 0.5) / fps


def read_frames(video_path: Path, times: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Decode the frames nearest to ``times`` (s) as RGB uint8 (F, H, W, 3) resized to ``size`` = (H, W)."""
    import cv2

    cap = cv2.VideoCapture(str(video_path))
    if not cap.isOpened():
        raise DataError(video_path, "cannot open video")
    try:
        video_fps = cap.get(cv2.CAP_PROP_FPS)
        n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not video_fps or video_fps <= 0 or n_frames <= 0:
            raise DataError(video_path, f"video reports fps={video_fps} and {n_frames} frames")
        wanted = np.clip(np.floor(times * video_fps).astype(int), 0, n_frames - 1)
        first, last = int(wanted.min()), int(wanted.max())
        cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        decoded: dict[int, np.ndarray] = {}
        needed = set(wanted.tolist())
        for index in range(first, last + 1):
            ok, frame = cap.read()
            if not ok:
                break
            if index in needed:
                frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                decoded[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if not decoded:
            raise DataError(video_path, f"no frame could be decoded between frames {first} and {last}")
        # frames past a truncated end repeat the last decoded one
        last_ok = decoded[max(decoded)]
        return np.stack([decoded.get(i, last_ok) for i in wanted.tolist()])
    finally:
        cap.release()


class VideoFrameCache:
    """Disk cache of sampled frames per (video, span, fps, size).

    Args:
        cache_dir: where .npy files go (created on demand).
        fps: sampling rate of frames (frames per second).
        size: (H, W) of the stored frames.
    """

    def __init__(self, cache_dir: Optional[Path], fps: float, size: tuple[int, int]):
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))

    def _key(self, video_path: Path, start: float, end: float) -> str:
        stat = video_path.stat()
        raw = f"{video_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{start:.4f}|{end:.4f}|{self.fps}|{self.size}"
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, video_path: Path, start: float, end: float) -> np.ndarray:
        """RGB uint8 frames (F, H, W, 3) of ``video_path`` between ``start`` and ``end`` seconds."""
        video_path = Path(video_path)
        if not video_path.is_file():
            raise DataError(video_path, "video file not found")
        if self.cache_dir is None:
            return read_frames(video_path, sample_times(start, end, self.fps), self.size)
        key = self._key(video_path, start, end)
        path = self.cache_dir / key[:2] / f"{key}.npy"
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False)
            except (ValueError, OSError):
                path.unlink(missing_ok=True)  # a damaged entry is rebuilt
        frames = read_frames(video_path, sample_times(start, end, self.fps), self.size)
        atomic_save_npy(path, frames)
        return frames
