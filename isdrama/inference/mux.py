"""Mux a drama's audio onto its input video (ffmpeg: the system's, else imageio-ffmpeg's)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ffmpeg_binary() -> str:
    """Path of an ffmpeg executable; RuntimeError saying how to get one."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            "muxing needs ffmpeg: install it (apt-get install ffmpeg) or pip install 'isdrama[video]'"
        ) from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def mux_audio(video: Path, audio: Path, out: Path) -> Path:
    """``out`` = ``video``'s picture (copied, not re-encoded) with ``audio`` as its sound track
    (AAC), cut to the shorter of the two; written atomically."""
    from isdrama.utils.io import atomic_path

    video, audio, out = Path(video), Path(audio), Path(out)
    for p in (video, audio):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found (mux)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".mp4") as tmp:
        cmd = [ffmpeg_binary(), "-y", "-loglevel", "error", "-i", str(video), "-i", str(audio)]
        cmd += ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-shortest", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not mux {audio} onto {video}: {proc.stderr.strip()[-500:]}")
    return out


__all__ = ["ffmpeg_binary", "mux_audio"]
