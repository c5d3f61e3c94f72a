"""Synthetic MRSDrama generator speed: seconds of binaural drama per CPU second.

Usage (from the repository root):

    python bench/bench_synth.py                       # 4 dramas, 1 process, video on, reverb off
    python bench/bench_synth.py --dramas 8 --workers 2 --reverb --no-video

Generates into a temporary folder (deleted afterwards) and prints one line:

    synth: 123.4 s of binaural audio in 10.2 CPU s -> 12.1 audio-s per CPU-s (wall 10.5 s, ...)

CPU time counts this process and its worker processes (espeak-ng subprocesses included), so the
figure is independent of the number of workers; wall time shows the parallel speed-up. The HRIR
set is loaded before the clock starts (a one-off cost per process, reported separately).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isdrama.data.synth import SynthConfig, summarize, synthesize_dataset  # noqa: E402
from isdrama.data.synth.hrtf import cached_hrtf  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process and all waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dramas", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reverb", action="store_true")
    parser.add_argument("--no-video", action="store_true")
    args = parser.parse_args()
    config = dataclasses.replace(
        SynthConfig(), n_dramas=args.dramas, seed=args.seed, reverb=args.reverb, video=not args.no_video
    )
    t0 = time.perf_counter()
    cached_hrtf(config.hrtf)
    load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        folders = synthesize_dataset(Path(tmp) / "out", config, num_workers=args.workers, progress=False)
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        summary = summarize(folders)
    audio = summary["seconds"]
    print(
        f"synth: {audio:.1f} s of binaural audio in {cpu:.1f} CPU s -> {audio / cpu:.2f} audio-s per CPU-s "
        f"(wall {wall:.1f} s, {audio / wall:.2f}x real time; {summary['dramas']} dramas, {summary['lines']} "
        f"lines, workers {args.workers}, reverb {'on' if args.reverb else 'off'}, video "
        f"{'off' if args.no_video else 'on'}, {os.cpu_count()} CPUs; HRIR load {load:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
