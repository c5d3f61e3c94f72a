"""Synthetic test speech from the espeak-ng command line tool (for tests, demos, benchmarks).

espeak-ng is a system package (Debian: ``apt-get install espeak-ng``), not a Python one.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def espeak_available() -> bool:
    """True when the ``espeak-ng`` executable is on PATH."""
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str = "en", speed_wpm: int = 175) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng voice ``voice`` (e.g. "en+m3", "en+f2").

    Returns:
        (wav, sr): float32 mono waveform (T,) and its sample rate (22050 Hz for espeak-ng).
    Raises:
        FileNotFoundError: espeak-ng is not installed.
        RuntimeError: espeak-ng failed.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        proc = subprocess.run(
            [exe, "-v", voice, "-s", str(speed_wpm), "-w", str(out), text], capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.strip()}")
        wav, sr = sf.read(str(out), dtype="float32")
    return wav, int(sr)
