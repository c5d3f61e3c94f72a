"""Shared fixtures: a tiny hand-written MRSDrama-layout dataset (independent of the generator)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SR = 48_000
POSE_RATE = 187.5


def write_tiny_dataset(
    root: Path,
    n_dramas: int = 3,
    lines_per_drama: int = 3,
    with_video: bool = False,
    set_name: str = "room1",
    seed: int = 0,
) -> Path:
    """Write a small valid dataset: tones with interaural level differences, static poses.

    Line k of drama d lasts 0.5 + 0.1 k seconds; speakers alternate between spk0 and spk1;
    speaker spk0 sits on the left (x = -2), spk1 on the right (x = +2).
    """
    rng = np.random.default_rng(seed)
    for d in range(n_dramas):
        drama = f"drama{d:02d}"
        ddir = root / set_name / drama
        (ddir / "wav").mkdir(parents=True, exist_ok=True)
        (ddir / "geometric_pose").mkdir(exist_ok=True)
        items, t = [], 0.0
        for k in range(lines_per_drama):
            dur = 0.5 + 0.1 * k
            spk = f"spk{k % 2}"
            n = int(round(dur * SR))
            tone = 0.1 * np.sin(2 * np.pi * (200 + 50 * k) * np.arange(n) / SR) + 0.01 * rng.standard_normal(n)
            left_gain = 1.0 if spk == "spk0" else 0.3
            wav = np.stack([tone * left_gain, tone * (1.3 - left_gain)], axis=1).astype(np.float32)
            name = f"{drama}_{t:.3f}_{t + dur:.3f}_{spk}"
            sf.write(ddir / "wav" / f"{name}.wav", wav, SR, subtype="PCM_16")
            frames = int(np.ceil(dur * POSE_RATE))
            pose = np.zeros((frames, 9), dtype=np.float32)
            pose[:, 0] = -2.0 if spk == "spk0" else 2.0
            pose[:, 1] = 1.0
            pose[:, 3] = 1.0
            np.save(ddir / "geometric_pose" / f"{name}.npy", pose)
            half = dur / 2
            items.append(
                {
                    "item_name": name,
                    "speaker": spk,
                    "raw_txt": f"line {k} of {drama}",
                    "word": ["hello", "<SP>", "world"],
                    "word_dur": [half - 0.05, 0.1, dur - half - 0.05],
                    "start_time": round(t, 3),
                    "end_time": round(t + dur, 3),
                    "wav_fn": f"wav/{name}.wav",
                    "pos_fn": f"geometric_pose/{name}.npy",
                    "spatial_prompt": f"[STATIC] sits to the {'left' if spk == 'spk0' else 'right'}",
                    "scene": set_name,
                    "language": "en",
                }
            )
            t += dur + 0.2
        (ddir / f"{drama}.json").write_text(json.dumps(items, indent=1))
        if with_video:
            write_tiny_video(ddir / f"{drama}.mp4", seconds=t + 0.5)
    return root


def write_tiny_video(path: Path, seconds: float, fps: int = 24, size: tuple[int, int] = (48, 64)) -> None:
    """A video whose frame k is filled with grey level k % 256 (so decoded frames identify their time)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    for k in range(int(np.ceil(seconds * fps))):
        writer.write(np.full((size[0], size[1], 3), (k * 5) % 256, dtype=np.uint8))
    writer.release()


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine's cores are shared: one intra-op thread beats oversubscribing."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "ds")
