"""Dataset health check: a summary of an MRSDrama root and every problem found in it.

Beyond what the reader validates (JSON structure, keys, paths), this opens the referenced files:
wav headers (48 kHz, 2 channels, non-empty, length matching the time span and word durations),
pose arrays ((T, 9), finite, length matching the audio) and the existence of the videos.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from isdrama.data.audio import audio_info
from isdrama.data.mrsdrama import scan_dataset
from isdrama.data.schema import (
    DATA_SAMPLE_RATE,
    POSE_FRAME_RATE,
    DataError,
    DatasetIndex,
    DramaLine,
    validate_pose_array,
)


@dataclass(frozen=True)
class CheckTolerances:
    """How far lengths may disagree before `check` reports a problem (seconds)."""

    duration: float = 0.05  # wav length vs end_time - start_time
    word_sum: float = 0.05  # sum(word_dur) vs wav length
    pose: float = 0.05  # pose frames / 187.5 vs wav length


@dataclass
class CheckReport:
    """Summary numbers and problems of one dataset root."""

    root: Path
    sets: list[str] = field(default_factory=list)
    dramas: int = 0
    lines: int = 0
    hours: float = 0.0
    speakers: list[str] = field(default_factory=list)
    lines_with_pose: int = 0
    lines_with_video: int = 0
    lines_with_prompt: int = 0
    lines_per_set: dict[str, int] = field(default_factory=dict)
    problems: list[DataError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, max_problems: int = 50) -> str:
        """Human-readable report."""
        out = [
            f"dataset: {self.root}",
            f"  sets:       {len(self.sets)} ({', '.join(s or '<none>' for s in self.sets)})",
            f"  dramas:     {self.dramas}",
            f"  lines:      {self.lines}"
            + (
                " (" + ", ".join(f"{k or '<none>'}: {v}" for k, v in self.lines_per_set.items()) + ")"
                if len(self.lines_per_set) > 1
                else ""
            ),
            f"  hours:      {self.hours:.3f}",
            f"  speakers:   {len(self.speakers)} ({', '.join(self.speakers[:12])}"
            f"{', ...' if len(self.speakers) > 12 else ''})",
            f"  with pose:  {self.lines_with_pose}/{self.lines}",
            f"  with video: {self.lines_with_video}/{self.lines}",
            f"  with text pose prompt: {self.lines_with_prompt}/{self.lines}",
        ]
        if self.problems:
            out.append(f"problems: {len(self.problems)}")
            out += [f"  - {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                out.append(f"  ... and {len(self.problems) - max_problems} more")
        else:
            out.append("problems: none")
        return "\n".join(out)


def check_line(line: DramaLine, tol: CheckTolerances, check_pose: bool = True) -> tuple[float, list[DataError]]:
    """Validate the files of one line. Returns (audio seconds, problems)."""
    problems: list[DataError] = []
    seconds = 0.0
    try:
        info = audio_info(line.wav_path)
        if info.samplerate != DATA_SAMPLE_RATE:
            problems.append(DataError(line.wav_path, f"sample rate {info.samplerate} Hz, expected {DATA_SAMPLE_RATE}"))
        if info.channels != 2:
            problems.append(DataError(line.wav_path, f"{info.channels} channel(s), expected 2 (binaural)"))
        if info.frames == 0:
            problems.append(DataError(line.wav_path, "audio is empty (0 samples)"))
        seconds = info.frames / info.samplerate
        if abs(seconds - line.duration) > tol.duration:
            problems.append(
                DataError(
                    line.wav_path,
                    f"audio lasts {seconds:.3f} s but the line spans "
                    f"{line.duration:.3f} s (start_time/end_time of {line.line_id})",
                )
            )
        word_sum = sum(line.word_durations)
        if line.word_durations and abs(word_sum - seconds) > tol.word_sum:
            problems.append(
                DataError(
                    line.wav_path,
                    f"word durations of {line.line_id} sum to {word_sum:.3f} s but the audio lasts {seconds:.3f} s",
                )
            )
    except DataError as exc:
        problems.append(exc)
    if line.pose_path is not None and check_pose:
        try:
            if not line.pose_path.is_file():
                raise DataError(line.pose_path, f"pose file of {line.line_id} not found")
            try:
                pose = np.load(line.pose_path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise DataError(line.pose_path, f"cannot read .npy: {exc}") from exc
            validate_pose_array(np.asarray(pose), line.pose_path)
            pose_seconds = pose.shape[0] / POSE_FRAME_RATE
            if seconds and abs(pose_seconds - seconds) > tol.pose:
                problems.append(
                    DataError(
                        line.pose_path,
                        f"pose covers {pose_seconds:.3f} s "
                        f"({pose.shape[0]} frames) but the audio lasts {seconds:.3f} s",
                    )
                )
        except DataError as exc:
            problems.append(exc)
    if line.video_path is not None and not line.video_path.is_file():
        problems.append(DataError(line.video_path, f"video of {line.line_id} not found"))
    return seconds, problems


def check_dataset(
    root: Path | str,
    tol: CheckTolerances = CheckTolerances(),
    check_pose: bool = True,
    progress: Optional[Callable] = None,
) -> CheckReport:
    """Scan ``root`` and validate every referenced file. ``progress`` wraps the line iterator (e.g. tqdm)."""
    scan = scan_dataset(root)
    index: DatasetIndex = scan.index
    report = CheckReport(root=Path(root), problems=list(scan.problems))
    lines = index.lines
    report.sets = index.sets
    report.dramas = len(index.scenes)
    report.lines = len(lines)
    report.lines_per_set = dict(sorted(Counter(line.set_name for line in lines).items()))
    report.speakers = sorted({line.speaker for line in lines})
    report.lines_with_pose = sum(line.pose_path is not None for line in lines)
    report.lines_with_video = sum(line.video_path is not None for line in lines)
    report.lines_with_prompt = sum(bool(line.pose_prompt) for line in lines)
    total = 0.0
    for line in progress(lines) if progress else lines:
        seconds, problems = check_line(line, tol, check_pose)
        total += seconds
        report.problems.extend(problems)
    report.hours = total / 3600.0
    return report
