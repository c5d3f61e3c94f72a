"""Data contracts shared by the reader, the synthetic generator, the cache and the data module.

These are *format* facts of MRSDrama (docs/data-format.md), not hyper-parameters:
binaural wav at 48 kHz (channel 0 = left, 1 = right) and a geometric pose per frame at
48 kHz / hop 256 = 187.5 frames/s with 9 columns in listener-centric metres
(x right, y front, z up, head at the origin facing +y, ears at x = -/+0.11 m).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

#: Sample rate of MRSDrama audio on disk.
DATA_SAMPLE_RATE = 48_000
#: Hop (samples at 48 kHz) of one geometric-pose frame.
POSE_HOP = 256
#: Geometric-pose frames per second (48000 / 256).
POSE_FRAME_RATE = DATA_SAMPLE_RATE / POSE_HOP
#: Column names of a geometric-pose array (T, 9).
POSE_COLUMNS = ("x", "y", "z", "qw", "qx", "qy", "qz", "v_rad_left", "v_rad_right")
#: Listener ear positions (metres, listener frame): left ear, right ear.
EAR_POSITIONS = np.array([[-0.11, 0.0, 0.0], [0.11, 0.0, 0.0]], dtype=np.float64)
#: Silence token used in MRSDrama word lists.
SILENCE_TOKEN = "<SP>"


class DataError(ValueError):
    """A dataset file is missing, malformed or inconsistent.

    The message always names the file and, where there is one, the key.
    """

    def __init__(self, path: Path | str, message: str, key: Optional[str] = None):
        self.path = str(path)
        self.key = key
        where = f"{path}" + (f" [key '{key}']" if key is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class DramaLine:
    """One cut line of a drama: one speaker, one wav file.

    Times are seconds; ``start``/``end`` locate the line inside the drama (and its video).
    ``word_durations`` sum to the audio duration of ``wav_path`` (within rounding).
    """

    drama_id: str
    line_id: str
    speaker: str
    text: str
    words: tuple[str, ...]
    word_durations: tuple[float, ...]
    start: float
    end: float
    wav_path: Path
    pose_path: Optional[Path] = None
    pose_prompt: Optional[str] = None
    scene_id: Optional[str] = None
    video_path: Optional[Path] = None
    set_name: str = ""
    language: Optional[str] = None
    phones: Optional[tuple[str, ...]] = None
    phone_durations: Optional[tuple[float, ...]] = None

    @property
    def duration(self) -> float:
        """Line length in seconds from its time span."""
        return self.end - self.start

    @property
    def video_span(self) -> Optional[tuple[float, float]]:
        """(start, end) seconds of this line in the drama video, or None without video."""
        return (self.start, self.end) if self.video_path is not None else None

    @property
    def key(self) -> str:
        """Dataset-unique identifier: ``set/drama/line``."""
        return "/".join(p for p in (self.set_name, self.drama_id, self.line_id) if p)


@dataclass(frozen=True)
class DramaScene:
    """A whole drama: its lines in time order, its speakers and its video."""

    drama_id: str
    directory: Path
    json_path: Path
    lines: tuple[DramaLine, ...]
    set_name: str = ""
    video_path: Optional[Path] = None
    scene_id: Optional[str] = None

    @property
    def speakers(self) -> tuple[str, ...]:
        """Speakers in order of first appearance."""
        seen: dict[str, None] = {}
        for line in self.lines:
            seen.setdefault(line.speaker, None)
        return tuple(seen)

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.set_name, self.drama_id) if p)


@dataclass
class DatasetIndex:
    """All scenes found under one dataset root."""

    root: Path
    scenes: list[DramaScene] = field(default_factory=list)

    @property
    def lines(self) -> list[DramaLine]:
        return [line for scene in self.scenes for line in scene.lines]

    @property
    def sets(self) -> list[str]:
        return sorted({s.set_name for s in self.scenes})


def validate_pose_array(pose: np.ndarray, path: Path | str) -> np.ndarray:
    """Check a geometric pose array: (T, 9) finite floats. Returns it as float32."""
    if pose.ndim != 2 or pose.shape[1] != len(POSE_COLUMNS):
        raise DataError(
            path,
            f"pose must have shape (T, {len(POSE_COLUMNS)}) with columns "
            f"{', '.join(POSE_COLUMNS)}; got {tuple(pose.shape)}",
        )
    if pose.shape[0] == 0:
        raise DataError(path, "pose array is empty (0 frames)")
    if not np.isfinite(pose).all():
        bad = int((~np.isfinite(pose)).any(axis=1).sum())
        raise DataError(path, f"pose has {bad} frame(s) with NaN or inf")
    return pose.astype(np.float32, copy=False)
