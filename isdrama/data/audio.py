"""Audio file I/O through soundfile, with validation and atomic writes.

torchaudio.load/save need torchcodec, which is not available everywhere; soundfile is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import soundfile as sf

from isdrama.data.schema import DataError
from isdrama.utils.io import atomic_path


def read_frames(
    path: Path | str,
    expect_sr: Optional[int] = None,
    expect_channels: Optional[int] = None,
    pcm16_as_int: bool = False,
    alloc: Optional[Callable[[tuple[int, int], str], np.ndarray]] = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file as its interleaved samples (frames, channels) plus its sample rate.

    float32, or int16 for 16-bit PCM when ``pcm16_as_int`` (int / 32768 in float is exact: what
    the float read returns). ``alloc(shape, dtype)`` gives the array to read into (a reused
    buffer; the result is a view of it); None allocates. Raises DataError naming the file when
    it is missing, unreadable, empty, not finite, or of an unexpected sample rate / channel count.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "audio file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            dtype = "int16" if pcm16_as_int and f.subtype == "PCM_16" else "float32"
            if alloc is None:
                data = f.read(dtype=dtype, always_2d=True)
            else:
                buf = alloc((f.frames, f.channels), dtype)
                data = buf[: f.read(out=buf).shape[0]]
            sr = int(f.samplerate)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        raise DataError(path, f"cannot read audio: {exc}") from exc
    if data.shape[0] == 0:
        raise DataError(path, "audio is empty (0 samples)")
    if expect_sr is not None and sr != expect_sr:
        raise DataError(path, f"sample rate {sr} Hz, expected {expect_sr} Hz")
    if expect_channels is not None and data.shape[1] != expect_channels:
        raise DataError(
            path, f"{data.shape[1]} channel(s), expected {expect_channels} (binaural: channel 0 = left, 1 = right)"
        )
    if data.dtype != np.int16 and not np.isfinite(data).all():  # PCM cannot hold NaN/inf
        raise DataError(path, "audio contains NaN or inf samples")
    return data, sr


def read_audio(
    path: Path | str,
    expect_sr: Optional[int] = None,
    expect_channels: Optional[int] = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 (channels, samples); checks and errors of `read_frames`."""
    data, sr = read_frames(path, expect_sr, expect_channels)
    return np.ascontiguousarray(data.T), sr


def audio_info(path: Path | str) -> sf._SoundFileInfo:
    """Header information (samplerate, channels, frames) without reading samples."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "audio file not found")
    try:
        return sf.info(str(path))
    except Exception as exc:
        raise DataError(path, f"cannot read audio header: {exc}") from exc


def write_audio(path: Path | str, wav: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write (channels, samples) or (samples,) float audio atomically as wav."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if not np.isfinite(wav).all():
        raise ValueError(f"{path}: refusing to write audio with NaN or inf samples")
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), wav.T, sr, subtype=subtype, format="WAV")
