"""The MRSDrama reader and `isdrama-data check` on a valid folder and on hand-broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from isdrama.data.check import check_dataset
from isdrama.data.cli import main as data_cli
from isdrama.data.mrsdrama import load_dataset, scan_dataset
from isdrama.data.schema import DataError


def _json(root: Path, drama: str = "drama00") -> Path:
    return root / "room1" / drama / f"{drama}.json"


def _edit_items(root: Path, edit, drama: str = "drama00") -> None:
    path = _json(root, drama)
    items = json.loads(path.read_text())
    edit(items)
    path.write_text(json.dumps(items))


def test_reads_valid_dataset(tiny_dataset: Path):
    index = load_dataset(tiny_dataset)
    assert len(index.scenes) == 3 and index.sets == ["room1"]
    scene = index.scenes[0]
    assert scene.speakers == ("spk0", "spk1")
    line = scene.lines[1]
    assert line.drama_id == "drama00" and line.set_name == "room1"
    assert line.words == ("hello", "<SP>", "world")
    assert line.duration == pytest.approx(0.6)
    assert line.wav_path.is_file() and line.pose_path.is_file()
    assert line.pose_prompt.startswith("[STATIC]") and line.language == "en" and line.scene_id == "room1"
    assert line.key == f"room1/drama00/{line.line_id}"
    starts = [ln.start for ln in scene.lines]
    assert starts == sorted(starts)


def test_check_clean_dataset_summary(tiny_dataset: Path, capsys):
    report = check_dataset(tiny_dataset)
    assert report.ok, report.format()
    assert (report.dramas, report.lines, report.lines_with_pose, report.lines_with_prompt) == (3, 9, 9, 9)
    expected_hours = 3 * (0.5 + 0.6 + 0.7) / 3600
    assert report.hours == pytest.approx(expected_hours, rel=1e-3)
    assert data_cli(["check", str(tiny_dataset), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "dramas:     3" in out and "problems: none" in out


def test_dict_forms_and_drama_level_defaults(tiny_dataset: Path):
    path = _json(tiny_dataset)
    items = json.loads(path.read_text())
    for it in items:
        del it["scene"]
        del it["spatial_prompt"]
    path.write_text(json.dumps({"scene": "roomX", "spatial_prompt": "[STATIC] default", "items": items}))
    scene = load_dataset(tiny_dataset).scenes[0]
    assert {ln.scene_id for ln in scene.lines} == {"roomX"}
    assert scene.lines[0].pose_prompt == "[STATIC] default"
    # name-keyed dict form
    keyed = {it.pop("item_name"): it for it in items}
    path.write_text(json.dumps(keyed))
    scene = load_dataset(tiny_dataset).scenes[0]
    assert sorted(ln.line_id for ln in scene.lines) == sorted(keyed)


def test_depth_one_layout(tmp_path: Path):
    from conftest import write_tiny_dataset

    write_tiny_dataset(tmp_path / "ds", n_dramas=1)
    flat = tmp_path / "flat"
    (tmp_path / "ds" / "room1").rename(flat)
    index = load_dataset(flat)
    assert len(index.scenes) == 1 and index.scenes[0].set_name == ""


def test_optional_keys_missing(tiny_dataset: Path):
    def strip(items):
        for it in items:
            for key in ("wav_fn", "pos_fn", "spatial_prompt", "scene", "language"):
                it.pop(key)

    _edit_items(tiny_dataset, strip)
    line = load_dataset(tiny_dataset).scenes[0].lines[0]
    assert line.wav_path.name == f"{line.line_id}.wav" and line.wav_path.is_file()
    assert line.pose_path is not None  # found by the default name
    assert line.pose_prompt is None and line.scene_id is None and line.language == "zh"


# ---- one test per error -------------------------------------------------------------------------


def test_malformed_json(tiny_dataset: Path):
    _json(tiny_dataset).write_text('[{"speaker": "a",')
    with pytest.raises(DataError, match=r"drama00\.json.*malformed JSON"):
        load_dataset(tiny_dataset)


def test_missing_required_key(tiny_dataset: Path):
    _edit_items(tiny_dataset, lambda items: items[1].pop("speaker"))
    with pytest.raises(DataError, match=r"drama00\.json \[key '.*_spk1\.speaker'\]: required key is missing"):
        load_dataset(tiny_dataset)


def test_word_duration_count_mismatch(tiny_dataset: Path):
    _edit_items(tiny_dataset, lambda items: items[0]["word_dur"].pop())
    with pytest.raises(DataError, match=r"word_dur'\]: 3 words but 2 durations"):
        load_dataset(tiny_dataset)


def test_bad_number_and_times(tiny_dataset: Path):
    _edit_items(tiny_dataset, lambda items: items[0].update(end_time=items[0]["start_time"]))
    with pytest.raises(DataError, match=r"end_time'\]: end_time .* is not after start_time"):
        load_dataset(tiny_dataset)
    _edit_items(tiny_dataset, lambda items: items[0].update(end_time="soon"))
    with pytest.raises(DataError, match=r"end_time'\]: expected a finite number, got 'soon'"):
        load_dataset(tiny_dataset)


def test_path_escaping_root(tiny_dataset: Path):
    _edit_items(tiny_dataset, lambda items: items[0].update(wav_fn="../../../../etc/passwd"))
    with pytest.raises(
        DataError, match=r"wav_fn'\]: path '../../../../etc/passwd' resolves to .* outside the dataset root"
    ):
        load_dataset(tiny_dataset)


def test_empty_and_duplicate_items(tiny_dataset: Path):
    _json(tiny_dataset).write_text("[]")
    with pytest.raises(DataError, match="no items"):
        load_dataset(tiny_dataset)
    _json(tiny_dataset).write_text("42")
    with pytest.raises(DataError, match="expected a list or an object"):
        load_dataset(tiny_dataset)


def test_duplicate_item_names(tiny_dataset: Path):
    _edit_items(tiny_dataset, lambda items: items[1].update(item_name=items[0]["item_name"]))
    with pytest.raises(DataError, match="duplicate item names"):
        load_dataset(tiny_dataset)


def test_scan_collects_all_problems(tiny_dataset: Path):
    _json(tiny_dataset, "drama00").write_text("{")
    _edit_items(tiny_dataset, lambda items: items[0].pop("raw_txt"), drama="drama01")
    result = scan_dataset(tiny_dataset)
    assert len(result.index.scenes) == 1 and len(result.problems) == 2
    with pytest.raises(DataError, match="2 problems"):
        load_dataset(tiny_dataset)


def _first_line(root: Path):
    return load_dataset(root).scenes[0].lines[0]


def _check_problems(root: Path) -> list[str]:
    return [str(p) for p in check_dataset(root).problems]


def test_check_missing_wav(tiny_dataset: Path):
    line = _first_line(tiny_dataset)
    line.wav_path.unlink()
    problems = _check_problems(tiny_dataset)
    assert any(str(line.wav_path) in p and "audio file not found" in p for p in problems)
    assert data_cli(["check", str(tiny_dataset), "--quiet"]) == 1


def test_check_wrong_sample_rate_and_channels(tiny_dataset: Path):
    line = _first_line(tiny_dataset)
    sf.write(line.wav_path, np.zeros((12_000, 2), np.float32), 24_000)
    other = load_dataset(tiny_dataset).scenes[1].lines[0]
    sf.write(other.wav_path, np.zeros(int(other.duration * 48_000), np.float32), 48_000)
    problems = _check_problems(tiny_dataset)
    assert any(str(line.wav_path) in p and "sample rate 24000 Hz, expected 48000" in p for p in problems)
    assert any(str(other.wav_path) in p and "1 channel(s), expected 2" in p for p in problems)


def test_check_empty_audio(tiny_dataset: Path):
    line = _first_line(tiny_dataset)
    sf.write(line.wav_path, np.zeros((0, 2), np.float32), 48_000)
    assert any("audio is empty" in p for p in _check_problems(tiny_dataset))


def test_check_duration_mismatch(tiny_dataset: Path):
    line = _first_line(tiny_dataset)
    sf.write(line.wav_path, np.zeros((48_000 * 2, 2), np.float32), 48_000)
    problems = _check_problems(tiny_dataset)
    assert any("audio lasts 2.000 s but the line spans 0.500 s" in p for p in problems)
    assert any("word durations" in p and "sum to 0.500 s" in p for p in problems)


def test_check_bad_pose(tiny_dataset: Path):
    lines = load_dataset(tiny_dataset).scenes[0].lines
    np.save(lines[0].pose_path, np.zeros((10, 7), np.float32))
    nan_pose = np.load(lines[1].pose_path)
    nan_pose[3, 0] = np.nan
    np.save(lines[1].pose_path, nan_pose)
    np.save(lines[2].pose_path, np.zeros((5, 9), np.float32))
    problems = _check_problems(tiny_dataset)
    assert any(str(lines[0].pose_path) in p and "shape (T, 9)" in p and "(10, 7)" in p for p in problems)
    assert any(str(lines[1].pose_path) in p and "1 frame(s) with NaN" in p for p in problems)
    assert any(str(lines[2].pose_path) in p and "pose covers 0.027 s (5 frames)" in p for p in problems)


def test_check_missing_root(tmp_path: Path, capsys):
    assert data_cli(["check", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "dataset root is not a directory" in capsys.readouterr().err
