"""Codec resynthesis of dataset lines: cached tokens -> EnCodec decoder -> binaural wav.

This is the ceiling of any generator that works in the codec's latent space (what the codec
alone loses), and until the drama transformer lands it is what the demo evaluates. It writes an
evaluation-ready folder:

    OUT/gt/NAME.wav        the original 48 kHz binaural line
    OUT/infer/NAME.wav     decoded tokens, resampled to 48 kHz
    OUT/prompt/NAME.wav    another line of the same speaker (for SIM to the prompt)
    OUT/texts.json         NAME -> transcript (for CER)

The split comes from the dataset's ``splits.json`` (the file training reads and writes), never
from fractions of its own: ``--val-fraction`` / ``--test-fraction`` / ``--seed`` are only checked
against the file, or used to create it when there is none.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from isdrama.data.schema import DATA_SAMPLE_RATE, DramaLine


def line_name(line: DramaLine) -> str:
    """A flat, file-system-safe name for a line."""
    return line.key.replace("/", "__")


#: How this tool sets the split values (appended to split-file errors).
CLI_HINT = "(resynth: --val-fraction, --test-fraction, --seed; --splits PATH for another file)"


def select_lines(
    root: Path,
    split: str,
    limit: Optional[int],
    val_fraction: Optional[float] = None,
    test_fraction: Optional[float] = None,
    seed: Optional[int] = None,
    splits_file: Optional[Path] = None,
) -> tuple[list[DramaLine], list[DramaLine]]:
    """(chosen lines of ``split``, all lines), the split read from the dataset's split file.

    ``split="all"`` needs no split file. The fractions and seed, when given, must match the file
    (or create it when there is none); see ``isdrama.data.splits.ensure_splits``.
    """
    from isdrama.data.mrsdrama import load_dataset
    from isdrama.data.splits import ensure_splits

    index = load_dataset(root)
    if split == "all":
        chosen = index.lines
    else:
        splits = ensure_splits(
            root, [s.key for s in index.scenes], val_fraction, test_fraction, seed, path=splits_file, hint=CLI_HINT
        )
        chosen = [ln for s in splits.partition(index.scenes)[split] for ln in s.lines]
    return (chosen[:limit] if limit else chosen), index.lines


def resynthesize(
    root: Path,
    out: Path,
    codec_config: dict,
    split: str = "test",
    limit: Optional[int] = None,
    val_fraction: Optional[float] = None,
    test_fraction: Optional[float] = None,
    seed: Optional[int] = None,
    device: str = "cpu",
    progress: bool = True,
    splits_file: Optional[Path] = None,
) -> int:
    """Write gt/, infer/, prompt/ and texts.json for the chosen lines; returns how many lines."""
    import numpy as np
    import torch
    import torchaudio.functional as AF
    from tqdm import tqdm

    from isdrama.data.audio import write_audio
    from isdrama.data.tokenization import open_token_cache
    from isdrama.utils.io import atomic_path, atomic_write_json

    lines, all_lines = select_lines(root, split, limit, val_fraction, test_fraction, seed, splits_file)
    if not lines:
        raise ValueError(f"{root}: no lines in split '{split}'")
    cache = open_token_cache(root, codec_config, device=device, lines=all_lines, progress=progress)
    cache.tokenize(lines, progress=progress)
    codec = cache.codec
    by_speaker: dict[str, list[DramaLine]] = {}
    for ln in all_lines:
        by_speaker.setdefault(ln.speaker, []).append(ln)
    texts = {}
    for line in tqdm(lines, desc="resynth", unit="line", disable=not progress):
        name = line_name(line)
        tokens = torch.from_numpy(cache.load(line).astype(np.int64))[None].to(device)
        with torch.no_grad():
            wav = codec.decode(tokens)[0]
        wav = AF.resample(wav.cpu(), codec.sample_rate, DATA_SAMPLE_RATE).numpy()
        write_audio(out / "infer" / f"{name}.wav", np.clip(wav, -1, 1), DATA_SAMPLE_RATE)
        with atomic_path(out / "gt" / f"{name}.wav", suffix=".wav") as tmp:
            shutil.copyfile(line.wav_path, tmp)
        others = [o for o in by_speaker[line.speaker] if o.key != line.key]
        if others:
            with atomic_path(out / "prompt" / f"{name}.wav", suffix=".wav") as tmp:
                shutil.copyfile(others[0].wav_path, tmp)
        texts[name] = line.text
    atomic_write_json(out / "texts.json", texts)
    return len(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `isdrama-data resynth`."""
    parser.add_argument("root", type=Path, help="dataset root (MRSDrama layout)")
    parser.add_argument("out", type=Path, help="output folder (gt/, infer/, prompt/, texts.json)")
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", "all"],
        help="which drama split of ROOT/splits.json (the one training uses; default test)",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many lines")
    parser.add_argument("--splits", type=Path, default=None, help="split file (default ROOT/splits.json)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="only checked against the split file (or used to create a missing one)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="only checked against the split file (or used to create a missing one)",
    )
    parser.add_argument("--seed", type=int, default=None, help="split seed, as --val-fraction")
    parser.add_argument("--bandwidth", type=float, default=6.0, help="codec kbps")
    parser.add_argument("--model", default="encodec_24khz")
    parser.add_argument("--pretrained", default="auto", choices=["auto", "true", "false"])
    parser.add_argument(
        "--codec-checkpoint",
        default=None,
        help="codec weights: a trained codec (python train.py experiment=codec_demo) or EnCodec's file",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from isdrama.data.schema import DataError

    codec_config = {
        "model": args.model,
        "bandwidth": args.bandwidth,
        "pretrained": args.pretrained,
        "checkpoint": args.codec_checkpoint,
    }
    try:
        n = resynthesize(
            args.root,
            args.out,
            codec_config,
            split=args.split,
            limit=args.limit,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            device=args.device,
            progress=not args.quiet,
            splits_file=args.splits,
        )
    except (DataError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    check = "" if args.split == "all" else f" --splits {args.splits or args.root} --split {args.split}"
    print(
        f"[resynth] {n} line(s) -> {args.out}/gt, {args.out}/infer (evaluate with: "
        f"isdrama-eval {args.out}/gt {args.out}/infer --prompt-dir {args.out}/prompt --texts {args.out}/texts.json"
        f"{check})"
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="isdrama-data resynth", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
