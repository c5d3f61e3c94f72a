"""Binaural F0 targets of the drama stage's F0 head, cached beside the tokens.

Per line and ear: the project's pitch tracker (:mod:`isdrama.metrics.speech.pitch`, Praat by
default) on the ear's signal at the tracker's rate, brought to the model frame rate (frame k
centred at (k + 0.5) / frame_rate s): log-F0 interpolated between voiced tracker frames, voicing
from the nearest tracker frame. Stored as float32 (2 ears, 2, T) = [log F0 in log Hz (0 where
unvoiced), voiced 0/1] under ``ROOT/.isdrama_cache/f0/<settings key>/<audio sha1>.npy``, keyed by
the audio's bytes and the tracker settings; written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from isdrama.data.audio import read_audio
from isdrama.data.cache import CACHE_DIRNAME, hash_file
from isdrama.data.schema import DataError, DramaLine
from isdrama.metrics.speech.pitch import PitchConfig, track_pitch
from isdrama.utils.config import build_config
from isdrama.utils.io import atomic_save_npy

log = logging.getLogger(__name__)

F0_SUBDIR = "f0"


def f0_at_frames(times: np.ndarray, f0: np.ndarray, voiced: np.ndarray, n_frames: int, frame_rate: float) -> np.ndarray:
    """(2, n_frames) [log F0 (0 unvoiced), voiced] at model frame centres from a tracker's frames."""
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    out = np.zeros((2, n_frames), np.float32)
    if times.size == 0 or not voiced.any():
        return out
    nearest = np.clip(np.searchsorted(times, centres), 0, times.size - 1)
    left = np.clip(nearest - 1, 0, times.size - 1)
    closer_left = np.abs(times[left] - centres) < np.abs(times[nearest] - centres)
    nearest = np.where(closer_left, left, nearest)
    is_voiced = voiced[nearest]
    log_f0 = np.interp(centres, times[voiced], np.log(f0[voiced]))
    out[0] = np.where(is_voiced, log_f0, 0.0)
    out[1] = is_voiced
    return out


class F0Cache:
    """Cached binaural F0 of a dataset's lines at ``frame_rate`` (see the module docstring).

    Args:
        root: dataset root. pitch: :class:`PitchConfig` values. frame_rate: model frames/s.
        cache_dir: folder holding ``<settings key>/`` (default ROOT/.isdrama_cache/f0).
    """

    def __init__(
        self, root: Path | str, pitch: Mapping | PitchConfig, frame_rate: float, cache_dir: Optional[Path | str] = None
    ):
        self.root = Path(root)
        self.pitch = build_config(PitchConfig, pitch, "data.f0")
        self.frame_rate = float(frame_rate)
        settings = json.dumps({"pitch": asdict(self.pitch), "frame_rate": self.frame_rate}, sort_keys=True)
        self.key = hashlib.sha1(settings.encode()).hexdigest()[:12]
        base = Path(cache_dir) if cache_dir is not None else self.root / CACHE_DIRNAME / F0_SUBDIR
        self.directory = base / self.key
        self._hashes: dict[tuple[str, int, int], str] = {}

    def _sha1(self, wav: Path) -> str:
        try:
            st = wav.stat()
        except FileNotFoundError:
            raise DataError(wav, "audio file not found") from None
        memo = (str(wav.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in self._hashes:
            self._hashes[memo] = hash_file(wav)
        return self._hashes[memo]

    def path_for(self, line: DramaLine) -> Path:
        sha1 = self._sha1(Path(line.wav_path))
        return self.directory / sha1[:2] / f"{sha1}.npy"

    def compute(self, line: DramaLine, n_frames: int) -> np.ndarray:
        """(2, 2, n_frames) F0 of both ears (not cached)."""
        import torch
        import torchaudio.functional as AF

        wav, sr = read_audio(line.wav_path, expect_channels=2)
        audio = AF.resample(torch.from_numpy(wav), sr, self.pitch.sample_rate).numpy()
        ears = []
        for ear in audio:
            track = track_pitch(ear, self.pitch)
            ears.append(f0_at_frames(track.times, track.f0, track.voiced, n_frames, self.frame_rate))
        return np.stack(ears).astype(np.float32)

    def load(self, line: DramaLine, n_frames: int) -> np.ndarray:
        """(2, 2, n_frames) cached F0 of a line (computed and cached on a miss); a cached entry of
        another length is cropped / edge-padded to ``n_frames`` (the tokens' frame count)."""
        path = self.path_for(line)
        if path.is_file():
            try:
                f0 = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise DataError(path, f"unreadable F0 cache entry ({exc}); delete it to recompute") from exc
        else:
            f0 = self.compute(line, n_frames)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(path, f0)
        if f0.ndim != 3 or f0.shape[:2] != (2, 2):
            raise DataError(path, f"F0 cache entry must be (2, 2, T), got {f0.shape}; delete it to recompute")
        if f0.shape[-1] >= n_frames:
            return f0[..., :n_frames]
        return np.concatenate([f0, np.zeros((2, 2, n_frames - f0.shape[-1]), np.float32)], axis=-1)

    def fill(self, lines: Sequence[DramaLine], frames: Sequence[int], progress: bool = True) -> int:
        """Compute every missing entry; returns how many were computed."""
        from tqdm.auto import tqdm

        todo = [(line, n) for line, n in zip(lines, frames) if not self.path_for(line).is_file()]
        for line, n in tqdm(todo, desc="f0 targets", unit="line", disable=not progress or not todo):
            self.load(line, n)
        return len(todo)


__all__ = ["F0Cache", "f0_at_frames"]
