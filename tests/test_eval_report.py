"""Evaluation plumbing: pairing by name, aggregation with confidence intervals, report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from isdrama.metrics.pairing import PairingError, pair_folders
from isdrama.metrics.report import EvaluationResult, aggregate, write_report


def _touch_wavs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        sf.write(folder / f"{n}.wav", np.zeros((480, 2), np.float32), 48_000)


def test_pairs_by_name(tmp_path):
    _touch_wavs(tmp_path / "gt", ["a", "b"])
    _touch_wavs(tmp_path / "inf", ["b", "a"])
    pairs = pair_folders(tmp_path / "gt", tmp_path / "inf", texts={"a": "hello"})
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[0].gt.parent.name == "gt" and pairs[0].infer.parent.name == "inf"
    assert pairs[0].text == "hello" and pairs[1].text is None


def test_mismatched_names_are_listed(tmp_path):
    _touch_wavs(tmp_path / "gt", ["a", "b", "c"])
    _touch_wavs(tmp_path / "inf", ["a", "d"])
    with pytest.raises(PairingError) as err:
        pair_folders(tmp_path / "gt", tmp_path / "inf")
    msg = str(err.value)
    assert "has 3 files" in msg and "has 2" in msg
    assert "only in" in msg and "b, c" in msg and ": d" in msg


def test_empty_or_missing_folders(tmp_path):
    (tmp_path / "gt").mkdir()
    _touch_wavs(tmp_path / "inf", ["a"])
    with pytest.raises(PairingError, match="no audio files"):
        pair_folders(tmp_path / "gt", tmp_path / "inf")
    with pytest.raises(PairingError, match="not a directory"):
        pair_folders(tmp_path / "nope", tmp_path / "inf")


def test_aggregate_matches_t_interval():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    agg = aggregate(values)
    std = np.std(values, ddof=1)
    # Student t 97.5% quantile for 4 degrees of freedom = 2.7764451
    assert agg.mean == pytest.approx(4.0)
    assert agg.ci95 == pytest.approx(2.7764451 * std / math.sqrt(5), rel=1e-6)
    assert aggregate([float("nan"), 2.0]).n == 1


def test_report_files(tmp_path):
    res = EvaluationResult(settings={"mode": "corrected"})
    res.add("a", "ipd_mae", 0.5)
    res.add("b", "ipd_mae", 1.5)
    res.add("a", "ang_cos", 0.9)
    res.skipped["cer"] = "no ASR model available"
    res.band_errors["ipd"] = np.linspace(0, 1, 128)
    res.angle_errors = np.array([5.0, 20.0])
    paths = write_report(res.finalize(), tmp_path)
    names = {p.name for p in paths}
    assert {"results.json", "per_file.csv", "summary.csv", "report.md", "band_errors.png", "angle_errors.png"} <= names
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["aggregate"]["ipd_mae"]["mean"] == pytest.approx(1.0)
    assert data["aggregate"]["ang_cos"]["n"] == 1
    assert data["skipped"] == {"cer": "no ASR model available"}
    md = (tmp_path / "report.md").read_text()
    assert "| ipd_mae | 1.0000 |" in md and "cer: no ASR model available" in md
    assert (tmp_path / "per_file.csv").read_text().splitlines()[0] == "name,ipd_mae,ang_cos"
    assert not list(tmp_path.glob(".*tmp"))
