"""The synthetic MRSDrama generator end to end: layout, reader, determinism, resume, consistency."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from isdrama.data.schema import EAR_POSITIONS, POSE_FRAME_RATE, POSE_HOP, SILENCE_TOKEN
from isdrama.data.synth import SynthConfig, summarize, synthesize_dataset
from isdrama.data.synth.generator import DONE_MARKER, SynthError
from isdrama.data.synth.hrtf import DEFAULT_SOFA
from isdrama.data.synth.video import PALETTE, Camera, VideoConfig

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not DEFAULT_SOFA.is_file(),
    reason="needs espeak-ng and libmysofa's MIT KEMAR SOFA file",
)

SR = 48_000
ITEM_KEYS = {
    "item_name",
    "speaker",
    "raw_txt",
    "word",
    "word_dur",
    "start_time",
    "end_time",
    "wav_fn",
    "pos_fn",
    "spatial_prompt",
    "scene",
    "language",
    "video_fn",
}
VIDEO = VideoConfig(width=160, height=120)
CONFIG = SynthConfig(n_dramas=3, seed=11, lines_per_drama=(3, 4), speakers_per_drama=(2, 3), video_config=VIDEO)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("synth") / "out"
    return root, synthesize_dataset(root, CONFIG, num_workers=0, progress=False)


def items_of(folder: Path) -> list[dict]:
    return json.loads((folder / f"{folder.name}.json").read_text(encoding="utf-8"))


def test_layout_and_reader(dataset):
    from isdrama.data.check import check_dataset

    root, folders = dataset
    assert len(folders) == CONFIG.n_dramas
    for folder in folders:
        assert folder.parent.name in {r.name for r in CONFIG.rooms}
        assert (folder / DONE_MARKER).is_file()
        assert (folder / f"{folder.name}.mp4").is_file()
        assert [p.name for p in folder.glob("*.json")] == [f"{folder.name}.json"]
    report = check_dataset(root)
    assert report.ok, report.format()
    assert report.lines == summarize(folders)["lines"]


def test_items_carry_every_documented_key_and_true_times(dataset):
    _, folders = dataset
    for folder in folders:
        items = items_of(folder)
        assert CONFIG.lines_per_drama[0] <= len(items) <= CONFIG.lines_per_drama[1]
        previous_end = 0.0
        for item in items:
            assert set(item) == ITEM_KEYS
            assert re.fullmatch(rf"{folder.name}_\d+\.\d{{3}}_\d+\.\d{{3}}_{item['speaker']}", item["item_name"])
            assert (
                item["item_name"] == f"{folder.name}_{item['start_time']:.3f}_{item['end_time']:.3f}_{item['speaker']}"
            )
            assert item["scene"] == folder.parent.name and item["language"] in ("en", "zh")
            assert item["start_time"] >= previous_end  # lines follow each other
            previous_end = item["end_time"]
            wav, sr = sf.read(folder / item["wav_fn"], always_2d=True)
            info = sf.info(str(folder / item["wav_fn"]))
            assert sr == SR and wav.shape[1] == 2 and info.subtype == "PCM_16"
            seconds = len(wav) / SR
            assert abs(sum(item["word_dur"]) - seconds) < 1e-3
            assert abs((item["end_time"] - item["start_time"]) - seconds) < 1e-3
            assert len(item["word"]) == len(item["word_dur"]) and item["word"][0] == SILENCE_TOKEN
            pose = np.load(folder / item["pos_fn"])
            assert pose.shape == (len(wav) // POSE_HOP + 1, 9) and pose.dtype == np.float32
            assert item["spatial_prompt"].startswith(("[STATIC] ", "[DYNAMIC] "))
            assert item["video_fn"] == f"{folder.name}.mp4"
        speakers = {it["speaker"] for it in items}
        assert CONFIG.speakers_per_drama[0] <= len(speakers) <= CONFIG.speakers_per_drama[1]
        assert all(a["speaker"] != b["speaker"] for a, b in zip(items, items[1:]))  # turns


def test_pose_is_consistent_geometry(dataset):
    """Distances in range, unit quaternions, radial velocities = derivative of ear distance,
    [DYNAMIC] prompts exactly for moving lines, and the louder ear on the side of the pose."""
    _, folders = dataset
    lateral = 0
    for folder in folders:
        for item in items_of(folder):
            pose = np.load(folder / item["pos_fn"]).astype(np.float64)
            d = np.linalg.norm(pose[:, :3], axis=1)
            assert np.all((d >= 0.5 - 1e-4) & (d <= 6.0 + 1e-4))
            assert np.allclose(np.linalg.norm(pose[:, 3:7], axis=1), 1.0, atol=1e-5)
            ear = np.linalg.norm(pose[:, None, :3] - EAR_POSITIONS[None], axis=-1)
            numeric = np.gradient(ear, 1 / POSE_FRAME_RATE, axis=0)
            close = np.abs(numeric - pose[:, 7:9]) < 0.02
            assert close.mean() > 0.97  # all but the frames at speed changes
            moving = np.abs(np.diff(pose[:, :3], axis=0)).max() > 1e-6
            assert item["spatial_prompt"].startswith("[DYNAMIC]" if moving else "[STATIC]")
            if not moving and abs(pose[0, 0]) > 1.5 * abs(pose[0, 1]):
                wav, _ = sf.read(folder / item["wav_fn"], always_2d=True)
                left, right = np.mean(wav**2, axis=0)
                assert (left > right) == (pose[0, 0] < 0), item["item_name"]
                lateral += 1
    assert lateral >= 1


def test_sp_words_are_silent_in_the_binaural_wav(dataset):
    _, folders = dataset
    margin = int(0.006 * SR)
    for folder in folders:
        for item in items_of(folder):
            wav, _ = sf.read(folder / item["wav_fn"], always_2d=True)
            energy = np.sum(wav**2, axis=1)
            edges = np.round(np.concatenate([[0], np.cumsum(item["word_dur"])]) * SR).astype(int)
            speech_level = energy[energy > 0].mean()
            for word, a, b in zip(item["word"], edges[:-1], edges[1:]):
                if word == SILENCE_TOKEN and b - a > 2 * margin + 10:
                    assert energy[a + margin : b - margin].mean() < 1e-4 * speech_level, (item["item_name"], a / SR)


def test_video_shows_each_speaker_at_its_position(dataset):
    import cv2

    _, folders = dataset
    camera = Camera(VIDEO)
    hits = checks = 0
    for folder in folders:
        items = items_of(folder)
        cap = cv2.VideoCapture(str(folder / f"{folder.name}.mp4"))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        assert frames[0].shape == (VIDEO.height, VIDEO.width, 3)
        assert len(frames) == int(np.ceil((items[-1]["end_time"] + CONFIG.tail) * VIDEO.fps))
        for item in items:
            pose = np.load(folder / item["pos_fn"])
            k = len(pose) // 2
            t = item["start_time"] + k / POSE_FRAME_RATE
            head = pose[k, :3] + np.array([0.0, 0.0, VIDEO.head_above_mouth])
            px, _ = camera.project(head[None])
            x, y = np.round(px[0]).astype(int)
            patch = frames[int(round(t * VIDEO.fps))][max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3)
            colour = np.array(PALETTE[int(item["speaker"][3:]) % len(PALETTE)])
            checks += 1
            hits += bool(np.any(np.abs(patch.astype(int) - colour).max(axis=1) < 60))
    assert hits >= 0.8 * checks, f"speaker colour found at the projected head in {hits}/{checks} lines"


def test_same_seed_gives_identical_files(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    synthesize_dataset(again, CONFIG, num_workers=0, progress=False)
    a, b = files(root), files(again)
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k]]
    assert not different, different
    other = dataclasses.replace(CONFIG, seed=CONFIG.seed + 1, n_dramas=1)
    other_folder = synthesize_dataset(tmp_path / "other", other, num_workers=0, progress=False)[0]
    first = sorted(root.rglob(f"{other_folder.name}.json"))[0]
    assert [i["raw_txt"] for i in items_of(other_folder)] != [i["raw_txt"] for i in items_of(first.parent)]


def test_resume_skips_complete_dramas_and_redoes_partial_ones(dataset, tmp_path):
    root, folders = dataset
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    synthesize_dataset(copy, CONFIG, num_workers=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()} == before
    victim = copy / folders[0].relative_to(root)
    (victim / DONE_MARKER).unlink()
    wav = next((victim / "wav").iterdir())
    wav.write_bytes(b"truncated")
    synthesize_dataset(copy, CONFIG, num_workers=0, progress=False)
    assert (victim / DONE_MARKER).is_file()
    assert files(victim) == files(folders[0])
    # growing n_dramas adds dramas and keeps the old ones
    more = dataclasses.replace(CONFIG, n_dramas=CONFIG.n_dramas + 1)
    grown = synthesize_dataset(copy, more, num_workers=0, progress=False)
    assert len(grown) == CONFIG.n_dramas + 1
    assert files(copy / folders[1].relative_to(root)) == files(folders[1])


def test_parallel_workers_give_the_same_dataset(dataset, tmp_path):
    root, _ = dataset
    config = dataclasses.replace(CONFIG, n_dramas=2)
    out = tmp_path / "parallel"
    synthesize_dataset(out, config, num_workers=2, progress=False)
    got = files(out)
    assert got and all(v == (root / k).read_bytes() for k, v in got.items())


def test_reverb_keeps_the_script_and_adds_a_tail(dataset, tmp_path):
    root, folders = dataset
    config = dataclasses.replace(CONFIG, n_dramas=1, reverb=True, video=False, lines_per_drama=(3, 3))
    dry_config = dataclasses.replace(config, reverb=False)
    wet = synthesize_dataset(tmp_path / "wet", config, num_workers=0, progress=False)[0]
    dry = synthesize_dataset(tmp_path / "dry", dry_config, num_workers=0, progress=False)[0]
    wet_items, dry_items = items_of(wet), items_of(dry)
    assert [i["raw_txt"] for i in wet_items] == [i["raw_txt"] for i in dry_items]
    for w, d in zip(wet_items, dry_items):
        a, _ = sf.read(wet / w["wav_fn"])
        b, _ = sf.read(dry / d["wav_fn"])
        last_sp = int(round((sum(d["word_dur"]) - d["word_dur"][-1] + 0.05) * SR))
        assert np.mean(a[last_sp:] ** 2) > 3 * np.mean(b[last_sp:] ** 2) + 1e-12  # reverberant tail


def test_bad_config_and_missing_sofa_are_reported(tmp_path):
    with pytest.raises(ValueError, match="language"):
        SynthConfig(language="fr")
    with pytest.raises(ValueError, match="speakers_per_drama"):
        SynthConfig(speakers_per_drama=(3, 2))
    bad = dataclasses.replace(CONFIG, hrtf=dataclasses.replace(CONFIG.hrtf, sofa_path=str(tmp_path / "x.sofa")))
    with pytest.raises(Exception, match="x.sofa"):
        synthesize_dataset(tmp_path / "o", bad, num_workers=0, progress=False)
    assert issubclass(SynthError, RuntimeError)
