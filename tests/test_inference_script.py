"""Drama scripts: parsing, every validation error naming the line and the field, trajectories
as poses, text as words, the CLI's --dry-run (no model anywhere here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import write_tiny_video

from isdrama.data.schema import POSE_FRAME_RATE
from isdrama.inference.generator import line_words, loudness_gain
from isdrama.inference.poses import trajectory_pose
from isdrama.inference.script import ScriptError, load_script, parse_script


@pytest.fixture
def assets(tmp_path) -> Path:
    sr = 16000
    t = np.arange(sr) / sr
    sf.write(tmp_path / "alice.wav", 0.1 * np.sin(2 * np.pi * 220 * t), sr)  # mono, 16 kHz
    sf.write(tmp_path / "bob.wav", np.stack([0.1 * np.sin(2 * np.pi * 150 * t)] * 2, axis=1), 48000)
    np.save(tmp_path / "pose.npy", np.tile(np.array([[-2, 1, 0, 1, 0, 0, 0, 0, 0]], np.float32), (100, 1)))
    write_tiny_video(tmp_path / "scene.mp4", seconds=3.0)
    return tmp_path


def base_script() -> dict:
    return {
        "speakers": [
            {"name": "alice", "prompt": "alice.wav", "language": "en"},
            {"name": "bob", "prompt": "bob.wav", "language": "zh", "prompt_text": "你好"},
        ],
        "scene": {"description": "a small room", "video": "scene.mp4"},
        "lines": [
            {"speaker": "alice", "text": "Hello, Bob.", "trajectory": {"waypoints": [{"azimuth": -90, "distance": 2}]}},
            {
                "speaker": "bob",
                "text": "你好。",
                "pause": 0.5,
                "trajectory": {
                    "waypoints": [{"t": 0.0, "x": 2.0, "y": 1.0}, {"t": 2.0, "x": -2.0, "y": 1.0, "z": 0.3}],
                    "facing": "path",
                },
            },
            {"speaker": "alice", "text": "Look.", "pose_file": "pose.npy"},
            {"speaker": "bob", "text": "走吧", "pose_text": "[DYNAMIC] walks from the left to the right"},
            {"speaker": "alice", "text": "Yes.", "video": {"start": 0.5, "end": 2.0}, "seed": 7},
        ],
    }


def write(path: Path, data: dict, suffix: str = ".yaml") -> Path:
    f = path / f"script{suffix}"
    f.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data, allow_unicode=True))
    return f


def test_a_valid_script_parses_with_defaults_and_converts_positions(assets):
    script = load_script(write(assets, base_script()))
    assert list(script.speakers) == ["alice", "bob"]
    assert script.speakers["bob"].prompt_text == "你好" and script.speakers["alice"].language == "en"
    lines = script.lines
    assert [ln.pose_kind for ln in lines] == ["trajectory", "trajectory", "pose_file", "pose_text", "video"]
    assert [ln.pause for ln in lines] == [0.0, 0.5, 0.3, 0.3, 0.3]  # first line none, then the default
    assert lines[1].language == "zh" and lines[4].seed == 7
    # azimuth -90 (clockwise from the front) at 2 m = 2 m to the left: x = -2
    np.testing.assert_allclose(lines[0].trajectory.waypoints[0].position, (-2.0, 0.0, 0.0), atol=1e-12)
    assert lines[0].trajectory.span is None and lines[1].trajectory.span == 2.0
    assert lines[4].video.path == assets / "scene.mp4" and lines[4].video.span == 1.5  # the scene video
    assert script.pose_kinds == ["pose_file", "pose_text", "trajectory", "video"]
    # JSON is accepted too, with the same result
    assert load_script(write(assets, base_script(), ".json")).lines == lines


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["lines"][1].update(speaker="carol"), r"lines\[1\]\.speaker: unknown speaker 'carol'"),
        (lambda s: s["speakers"][0].update(prompt="missing.wav"), r"speakers\[0\]\.prompt: prompt wav not found"),
        (
            lambda s: s["lines"][1]["trajectory"]["waypoints"][1].update(t=0.0),
            r"lines\[1\]\.trajectory\.waypoints\[1\]\.t: waypoint times must increase",
        ),
        (
            lambda s: s["lines"][4]["video"].update(end=9.0),
            r"lines\[4\]\.video\.end: the span ends at 9 s but scene\.mp4 lasts 3\.00 s",
        ),
        (lambda s: s["lines"][0].update(language="fr"), r"lines\[0\]\.language: unsupported language 'fr'"),
        (lambda s: s["lines"][2].update(pose_text="left"), r"lines\[2\]: needs exactly one pose"),
        (lambda s: s["lines"][2].pop("pose_file"), r"lines\[2\]: needs exactly one pose .* got none"),
        (lambda s: s["lines"][0].update(pause=-1), r"lines\[0\]\.pause: must be >= 0"),
        (lambda s: s["lines"][0].update(text=" "), r"lines\[0\]\.text: must be a non-empty string"),
        (lambda s: s["lines"][0].update(volume=3), r"lines\[0\]: unknown field\(s\) \['volume'\]"),
        (
            lambda s: s["lines"][0]["trajectory"]["waypoints"][0].update(distance=0.1),
            r"lines\[0\]\.trajectory\.waypoints\[0\]\.distance|inside the listener's head",
        ),
        (
            lambda s: s["lines"][4]["video"].update(start=2.5),
            r"lines\[4\]\.video\.end: the span ends .* before it starts",
        ),
        (
            lambda s: s["speakers"].append({"name": "alice", "prompt": "bob.wav"}),
            r"speakers\[2\]\.name: speaker 'alice' is defined twice",
        ),
        (
            lambda s: s["lines"][0]["trajectory"].update(posture="lying"),
            r"lines\[0\]\.trajectory\.posture: must be one of",
        ),
    ],
)
def test_script_errors_name_the_line_and_the_field(assets, edit, message):
    data = base_script()
    edit(data)
    with pytest.raises(ScriptError, match=message) as info:
        load_script(write(assets, data))
    assert str(info.value).startswith(str(assets / "script.yaml"))


def test_a_bad_pose_file_and_a_broken_yaml_are_named(assets):
    np.save(assets / "bad.npy", np.zeros((10, 4), np.float32))
    data = base_script()
    data["lines"][2]["pose_file"] = "bad.npy"
    with pytest.raises(ScriptError, match=r"lines\[2\]\.pose_file: .*9"):
        load_script(write(assets, data))
    (assets / "broken.yaml").write_text("speakers: [\n")
    with pytest.raises(ScriptError, match="not valid YAML"):
        load_script(assets / "broken.yaml")
    with pytest.raises(ScriptError, match="drama script not found"):
        load_script(assets / "nope.yaml")
    with pytest.raises(ScriptError, match="lines: must be a non-empty list"):
        parse_script({"speakers": base_script()["speakers"], "lines": []}, "s", assets)


def test_a_walking_trajectory_crosses_from_right_to_left_and_a_static_one_stays():
    from isdrama.inference.script import TrajectoryPose, Waypoint

    spec = TrajectoryPose((Waypoint(0.0, (2.0, 1.0, 0.0)), Waypoint(2.0, (-2.0, 1.0, 0.0))), "standing", "path")
    rate = 75.0
    pose = trajectory_pose(spec, 225, rate)  # 3 s: walks for 2 s, then holds
    assert pose.shape == (225, 9) and pose.dtype == np.float32
    np.testing.assert_allclose(pose[0, :3], (2.0, 1.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(pose[75, 0], 0.0, atol=1e-5)  # halfway at t = 1 s
    np.testing.assert_allclose(pose[160:, 0], -2.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pose[:, 3:7], axis=1), 1.0, atol=1e-5)  # unit quaternions
    # walking towards -x: facing the path means yaw +90 deg (a positive yaw turns towards -x)
    from isdrama.data.synth.geometry import quaternion_facing

    np.testing.assert_allclose(quaternion_facing(pose[30:31, 3:7].astype(np.float64))[0], (-1.0, 0.0, 0.0), atol=1e-5)
    static = TrajectoryPose((Waypoint(0.0, (-1.5, 0.5, -0.1)),), "sitting", "listener")
    sp = trajectory_pose(static, 10, rate)
    np.testing.assert_allclose(sp[:, :3], np.tile([-1.5, 0.5, -0.1], (10, 1)), atol=1e-6)
    np.testing.assert_allclose(sp[:, 7:], 0.0, atol=1e-9)  # no radial velocity


def test_line_words_follow_the_training_layout():
    assert line_words("Hello, Bob. How are you?") == [
        "<SP>",
        "Hello",
        "<SP>",
        "Bob",
        "<SP>",
        "How",
        "are",
        "you",
        "<SP>",
    ]
    assert line_words("你好，走吧。") == ["<SP>", "你好", "<SP>", "走吧", "<SP>"]


def test_loudness_gain_reaches_the_target_and_respects_the_peak():
    import pyloudnorm

    sr = 48000
    t = np.arange(2 * sr) / sr
    wav = np.stack([0.01 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    gain, report = loudness_gain(wav, sr, -23.0, 0.99)
    assert abs(pyloudnorm.Meter(sr).integrated_loudness((wav * gain).T.astype(np.float64)) + 23.0) < 0.05
    assert report["gain_db"] == pytest.approx(20 * math.log10(gain))
    gain, report = loudness_gain(wav, sr, 0.0, 0.5)  # 0 LUFS would clip: the peak wins
    assert np.abs(wav * gain).max() == pytest.approx(0.5, rel=1e-6) and report["peak_limited"]


def test_dry_run_validates_without_a_model(assets, capsys):
    from isdrama.inference.cli import main

    path = write(assets, base_script())
    assert main([str(path), "--dry-run", "--checkpoint", str(assets / "no-model.pt")]) == 0
    out = capsys.readouterr().out
    assert "valid drama script" in out and "lines: 5" in out and "video x1" in out
    data = base_script()
    data["lines"][0]["speaker"] = "zed"
    assert main([str(write(assets, data)), "--dry-run"]) == 2
    assert "lines[0].speaker: unknown speaker 'zed'" in capsys.readouterr().err


def test_pose_file_frames_follow_the_pose_rate(assets):
    from isdrama.inference.poses import file_pose, pose_file_frames

    assert pose_file_frames(assets / "pose.npy", 75.0) == math.ceil(100 * 75.0 / POSE_FRAME_RATE)
    pose = file_pose(assets / "pose.npy", None, 75.0)
    np.testing.assert_allclose(pose[:, 0], -2.0)
