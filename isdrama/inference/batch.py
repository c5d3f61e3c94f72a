"""Batch generation over a dataset split, in the folder layout ``isdrama-eval`` reads:

    OUT/gt/NAME.wav        the line's 48 kHz binaural recording
    OUT/infer/NAME.wav     the system's line at 48 kHz
    OUT/prompt/NAME.wav    the speaker prompt used (another line of the same speaker)
    OUT/texts.json         NAME -> transcript (CER)
    OUT/batch.json         what was run (mode, settings, model, lines)

Systems: the drama model in one pose mode (``geo``: the line's pose file, ``text``: its spatial
prompt, ``video``: the drama video over its span), or the ``cascade`` baseline (the paper's
"Spatialization" row): the ground truth's channel average re-rendered by the project's HRTF
renderer along the line's pose. Every line keeps its recorded length (frames = the ground
truth's, the content durations predicted and scaled to it), so frame-aligned metrics (IPD, ILD,
FFE) compare like with like. The prompt is the same line resynth uses (the first other line of
the speaker in the dataset); lines are generated independently (no context prompt).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from isdrama.data.schema import DATA_SAMPLE_RATE, POSE_FRAME_RATE, DramaLine
from isdrama.inference.resynth import line_name, select_lines

MODES = ("geo", "video", "text", "cascade")
#: how each mode's pose prompt is taken from a dataset line
_KIND_OF_MODE = {"geo": "pose_file", "text": "pose_text", "video": "video"}


def script_line(line: DramaLine, mode: str, index: int = 0):
    """A dataset line as a script :class:`~isdrama.inference.script.Line` with the pose of ``mode``."""
    from isdrama.inference.script import Line, VideoSpan

    kind = _KIND_OF_MODE[mode]
    kwargs: dict[str, Any] = {}
    if kind == "pose_file":
        if line.pose_path is None:
            raise ValueError(f"{line.key}: no pose file (geo mode)")
        kwargs["pose_file"] = line.pose_path
    elif kind == "pose_text":
        if not line.pose_prompt:
            raise ValueError(f"{line.key}: no spatial prompt (text mode)")
        kwargs["pose_text"] = line.pose_prompt
    else:
        if line.video_path is None:
            raise ValueError(f"{line.key}: no video (video mode)")
        kwargs["video"] = VideoSpan(Path(line.video_path), float(line.start), float(line.end))
    return Line(
        index=index,
        speaker=line.speaker,
        text=line.text,
        language=line.language or "zh",
        pause=0.0,
        pose_kind=kind,
        **kwargs,
    )


def pose_path_of(pose: np.ndarray, frame_rate: float = POSE_FRAME_RATE):
    """A renderer path (position_at / facing_at) through the rows of a 9-column pose track."""
    from isdrama.data.synth.geometry import facing_yaw, quaternion_facing
    from isdrama.data.synth.trajectory import Trajectory

    pose = np.asarray(pose, dtype=np.float64)
    times = np.arange(len(pose)) / frame_rate
    yaws = np.unwrap(facing_yaw(quaternion_facing(pose[:, 3:7])))
    if len(pose) == 1:
        times, pose, yaws = np.array([0.0, 1.0]), np.repeat(pose, 2, 0), np.repeat(yaws, 2)
    return Trajectory(times=times, positions=pose[:, :3], yaws=yaws, posture="standing")


def cascade_line(line: DramaLine, hrtf) -> np.ndarray:
    """The cascade baseline of a line: its recording's channel average rendered binaurally along
    its pose (48 kHz, the recording's length)."""
    from isdrama.data.audio import read_audio
    from isdrama.data.synth.render import render_binaural

    wav, sr = read_audio(line.wav_path)
    if sr != DATA_SAMPLE_RATE:
        raise ValueError(f"{line.wav_path}: {sr} Hz, expected {DATA_SAMPLE_RATE}")
    if line.pose_path is None:
        raise ValueError(f"{line.key}: no pose file (the cascade renders along it)")
    mono = np.asarray(wav, dtype=np.float64).mean(0)  # (channels, N) -> (N,)
    path = pose_path_of(np.load(line.pose_path))
    out = render_binaural(mono, path, hrtf, n_out=len(mono))
    return out.astype(np.float32)


def _copy(src: Path, dst: Path) -> None:
    from isdrama.utils.io import atomic_path

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, suffix=dst.suffix) as tmp:
        shutil.copyfile(src, tmp)


def generate_split(
    root: Path,
    out: Path,
    mode: str,
    generator=None,
    split: str = "test",
    limit: Optional[int] = None,
    splits_file: Optional[Path] = None,
    progress: bool = True,
) -> int:
    """Write the evaluation folder of ``mode`` for the lines of ``split``; returns the line count.
    ``generator``: a :class:`~isdrama.inference.generator.DramaGenerator` (not for ``cascade``).
    Lines already written (their infer wav exists) are kept: an interrupted run resumes."""
    from tqdm.auto import tqdm

    from isdrama.data.audio import audio_info, write_audio
    from isdrama.inference.generator import resample_audio
    from isdrama.utils.io import atomic_write_json

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "cascade" and generator is None:
        raise ValueError(f"mode {mode!r} needs a DramaGenerator")
    root, out = Path(root), Path(out)
    lines, all_lines = select_lines(root, split, limit, splits_file=splits_file)
    if not lines:
        raise ValueError(f"{root}: no lines in split '{split}'")
    by_speaker: dict[str, list[DramaLine]] = {}
    for ln in all_lines:
        by_speaker.setdefault(ln.speaker, []).append(ln)
    hrtf = None
    if mode == "cascade":
        from isdrama.data.synth.generator import SynthConfig
        from isdrama.data.synth.hrtf import cached_hrtf

        hrtf = cached_hrtf(SynthConfig().hrtf)
    texts, prompts_used, keys = {}, {}, {}
    for i, line in enumerate(tqdm(lines, desc=f"batch {mode}", unit="line", disable=not progress)):
        name = line_name(line)
        others = [o for o in by_speaker[line.speaker] if o.key != line.key]
        target = out / "infer" / f"{name}.wav"
        if not target.is_file():
            if mode == "cascade":
                wav = cascade_line(line, hrtf)
            else:
                if not others:
                    raise ValueError(f"{line.key}: speaker {line.speaker!r} has no other line to prompt with")
                sl = script_line(line, mode, i)
                n = audio_info(line.wav_path).frames
                frames = max(1, math.ceil(n * generator.frame_rate / DATA_SAMPLE_RATE - 1e-9))
                pose = generator.pose_input(sl, frames)
                res = generator.generate_line(
                    line.text,
                    pose,
                    generator.encode_prompt_file(others[0].wav_path),
                    frames=frames,
                    seed=generator.settings.seed + i,
                )
                wav = resample_audio(res.wav, res.sample_rate, DATA_SAMPLE_RATE)[:, :n]
            write_audio(target, np.clip(wav, -1, 1), DATA_SAMPLE_RATE)
        _copy(line.wav_path, out / "gt" / f"{name}.wav")
        if others:
            _copy(others[0].wav_path, out / "prompt" / f"{name}.wav")
            prompts_used[name] = others[0].key
        texts[name] = line.text
        keys[name] = line.key
    atomic_write_json(out / "texts.json", texts)
    info: dict[str, Any] = {
        "mode": mode,
        "root": str(root),
        "split": split,
        "lines": len(lines),
        "keys": keys,
        "prompts": prompts_used,
    }
    if generator is not None:
        from dataclasses import asdict

        info.update(settings=asdict(generator.settings), model=generator.identity)
    atomic_write_json(out / "batch.json", info)
    return len(lines)


def side_agreement(root: Path, folder: Path, margin_deg: float = 22.5) -> dict[str, Any]:
    """Spatial control of a batch folder: on the lines more than ``margin_deg`` off the median plane
    (side from the line's pose file), the share whose generated broadband ILD has the pose's sign."""
    import json

    from isdrama.data.audio import read_audio
    from isdrama.data.mrsdrama import load_dataset
    from isdrama.metrics.interaural import broadband_ild_db, lateral_side

    keys = json.loads((Path(folder) / "batch.json").read_text())["keys"]
    by_key = {ln.key: ln for ln in load_dataset(Path(root)).lines}
    hits = []
    for name, key in keys.items():
        line = by_key[key]
        side = lateral_side(np.load(line.pose_path), margin_deg) if line.pose_path is not None else None
        if side is None:
            continue
        wav, _ = read_audio(Path(folder) / "infer" / f"{name}.wav")
        hits.append(float(np.sign(broadband_ild_db(wav)) == side))
    return {"lateral_lines": len(hits), "ild_sign_matches_pose": float(np.mean(hits)) if hits else None}


__all__ = ["MODES", "cascade_line", "generate_split", "pose_path_of", "script_line", "side_agreement"]
