"""Pair ground-truth and generated files by name (gt/NAME.wav <-> infer/NAME.wav)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

AUDIO_SUFFIXES = (".wav", ".flac")


class PairingError(ValueError):
    """The two folders do not hold the same file names."""


@dataclass(frozen=True)
class FilePair:
    """One evaluation unit: the reference and the generated file of the same name."""

    name: str
    gt: Path
    infer: Path
    prompt: Optional[Path] = None
    text: Optional[str] = None


def list_audio(folder: Path) -> dict[str, Path]:
    """name (relative path without suffix) -> file for every audio file under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PairingError(f"{folder}: not a directory")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            files[str(path.relative_to(folder).with_suffix(""))] = path
    return files


def pair_folders(
    gt_dir: Path, infer_dir: Path, prompt_dir: Optional[Path] = None, texts: Optional[dict[str, str]] = None
) -> list[FilePair]:
    """Pairs of equal names; refuses differing name sets with the list of differences.

    ``prompt_dir`` (optional) holds the speaker prompt of each name; ``texts`` maps names to the
    reference transcript (for CER).
    """
    gt, inf = list_audio(gt_dir), list_audio(infer_dir)
    if not gt:
        raise PairingError(f"{gt_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    only_gt, only_inf = sorted(set(gt) - set(inf)), sorted(set(inf) - set(gt))
    if only_gt or only_inf:

        def show(names: list[str]) -> str:
            return ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")

        msg = [f"{gt_dir} has {len(gt)} files and {infer_dir} has {len(inf)}; names must match."]
        if only_gt:
            msg.append(f"only in {gt_dir}: {show(only_gt)}")
        if only_inf:
            msg.append(f"only in {infer_dir}: {show(only_inf)}")
        raise PairingError("\n".join(msg))
    prompts = list_audio(prompt_dir) if prompt_dir is not None else {}
    if prompt_dir is not None:
        missing = sorted(set(gt) - set(prompts))
        if missing:
            raise PairingError(f"{prompt_dir}: no prompt for {', '.join(missing[:10])}")
    return [
        FilePair(name=n, gt=gt[n], infer=inf[n], prompt=prompts.get(n), text=(texts or {}).get(n)) for n in sorted(gt)
    ]
