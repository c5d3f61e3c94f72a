"""`isdrama-data synth OUT --dramas N --seed S ...`: write a synthetic MRSDrama-layout dataset.

At the end it writes (or extends) ``OUT/splits.json``, the drama split every tool reads, with the
default fractions of ``isdrama.data.splits`` (those of configs/data/synth_demo.yaml); an existing
file keeps its own fractions and only gains the new dramas.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path


def _pair(kind: type, what: str):
    """argparse type for 'A' or 'A-B' / 'A,B' ranges -> (min, max)."""

    def parse(text: str):
        parts = text.replace(",", "-").split("-")
        try:
            if len(parts) > 2:
                raise ValueError
            lo, hi = kind(parts[0]), kind(parts[-1])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: expected N or MIN-MAX, got {text!r}") from None
        if lo > hi:
            raise argparse.ArgumentTypeError(f"{what}: MIN {lo} > MAX {hi}")
        return lo, hi

    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--video-size: expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"--video-size: at least 16x16, got {text!r}")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `isdrama-data synth`."""
    from isdrama.data.synth.generator import LANGUAGE_MODES, SynthConfig
    from isdrama.data.synth.hrtf import DEFAULT_SOFA

    d = SynthConfig()
    parser.add_argument("out", type=Path, help="output root (created); complete dramas are kept (resume)")
    parser.add_argument("--dramas", type=int, default=d.n_dramas, help=f"number of dramas (default {d.n_dramas})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed -> same files")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="parallel processes (default min(4, CPUs)); 0/1 = in this process",
    )
    parser.add_argument(
        "--lines",
        type=_pair(int, "--lines"),
        default=d.lines_per_drama,
        metavar="MIN-MAX",
        help="lines per drama (default %d-%d)" % d.lines_per_drama,
    )
    parser.add_argument(
        "--speakers",
        type=_pair(int, "--speakers"),
        default=d.speakers_per_drama,
        metavar="MIN-MAX",
        help="speakers per drama (default %d-%d)" % d.speakers_per_drama,
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=d.speaker_pool_size,
        help=f"global speaker pool size (default {d.speaker_pool_size})",
    )
    parser.add_argument(
        "--language",
        choices=LANGUAGE_MODES,
        default=d.language,
        help="en, zh or mixed (one language per drama; default mixed)",
    )
    parser.add_argument(
        "--sofa", type=Path, default=Path(d.hrtf.sofa_path), help=f"SOFA HRIR file (default {DEFAULT_SOFA})"
    )
    parser.add_argument("--reverb", action="store_true", help="add room reverberation (slower)")
    parser.add_argument("--no-video", action="store_true", help="skip the mp4 videos")
    parser.add_argument(
        "--video-size",
        type=_size,
        default=(d.video_config.width, d.video_config.height),
        metavar="WxH",
        help="video frame size (default %dx%d)" % (d.video_config.width, d.video_config.height),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """SynthConfig from parsed arguments."""
    from isdrama.data.synth.generator import SynthConfig

    d = SynthConfig()
    return SynthConfig(
        n_dramas=args.dramas,
        seed=args.seed,
        lines_per_drama=tuple(args.lines),
        speakers_per_drama=tuple(args.speakers),
        speaker_pool_size=args.pool,
        language=args.language,
        reverb=args.reverb,
        video=not args.no_video,
        hrtf=dataclasses.replace(d.hrtf, sofa_path=str(args.sofa)),
        video_config=dataclasses.replace(d.video_config, width=args.video_size[0], height=args.video_size[1]),
    )


def run(args: argparse.Namespace) -> int:
    """Generate, then print a short summary. 0 on success, 2 on a bad input (message on stderr)."""
    from isdrama.data.schema import DataError
    from isdrama.data.splits import SPLITS, update_splits
    from isdrama.data.synth.generator import SynthError, summarize, synthesize_dataset
    from isdrama.data.synth.tts import EspeakError

    try:
        config = config_from_args(args)
        start = time.perf_counter()
        folders = synthesize_dataset(args.out, config, num_workers=args.workers, progress=not args.quiet)
        splits = update_splits(args.out)
    except (ValueError, DataError, EspeakError, SynthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    s = summarize(folders)
    print(
        f"synth: {s['dramas']} dramas, {s['lines']} lines, {s['seconds'] / 60:.1f} min of binaural audio "
        f"in {wall:.1f} s -> {args.out}"
    )
    print(
        f"  sets: {', '.join(s['sets']) or '-'}; speakers: {len(s['speakers'])}; "
        f"languages: {', '.join(s['languages']) or '-'}; reverb: {'on' if config.reverb else 'off'}; "
        f"video: {'on' if config.video else 'off'}"
    )
    counts = splits.counts()
    print(
        f"  splits: {splits.path} ({', '.join(f'{k} {counts[k]}' for k in SPLITS)} dramas; "
        f"val_fraction {splits.val_fraction}, test_fraction {splits.test_fraction}, seed {splits.seed})"
    )
    return 0
