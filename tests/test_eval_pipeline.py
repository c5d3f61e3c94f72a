"""`isdrama-eval` end to end on small binaural fixtures: numbers, skipped metrics, errors, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from isdrama.metrics.cli import main as eval_cli

SR = 48_000


def _binaural(f0: float, seconds: float, itd_samples: int, gain_r: float, seed: int) -> np.ndarray:
    """A harmonic tone with noise: right ear delayed by ``itd_samples`` and scaled by ``gain_r``."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    sig = sum(0.1 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6)) + 0.005 * rng.standard_normal(t.size)
    right = np.roll(sig, itd_samples) * gain_r
    return np.stack([sig, right], axis=1).astype(np.float32)


def _write_pairs(tmp_path, infer_fn):
    for d in ("gt", "infer"):
        (tmp_path / d).mkdir(exist_ok=True)
    for i in range(3):
        gt = _binaural(150 + 30 * i, 1.5, 10, 0.5, seed=i)
        sf.write(tmp_path / "gt" / f"utt{i}.wav", gt, SR)
        sf.write(tmp_path / "infer" / f"utt{i}.wav", infer_fn(gt), SR)


def _run(tmp_path, *extra):
    out = tmp_path / "report"
    rc = eval_cli([str(tmp_path / "gt"), str(tmp_path / "infer"), "--out", str(out), "--quiet", *extra])
    return rc, out


def test_identical_files_score_zero_error(tmp_path):
    _write_pairs(tmp_path, lambda gt: gt)
    rc, out = _run(tmp_path, "--metrics", "ipd,ild,ffe,ang,dis")
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    agg = data["aggregate"]
    assert agg["ipd_mae"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert agg["ild_mae"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert agg["ffe"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert agg["ipd_mae"]["n"] == 3
    assert "no SpatialAST checkpoint" in data["skipped"]["ang_cos"]
    assert "ang_cos" not in agg  # skipped, never a made-up value
    assert (out / "band_errors.png").is_file() and (out / "report.md").is_file()


def test_swapped_ears_give_large_errors(tmp_path):
    _write_pairs(tmp_path, lambda gt: gt[:, ::-1].copy())
    rc, out = _run(tmp_path, "--metrics", "ipd,ild")
    assert rc == 0
    agg = json.loads((out / "results.json").read_text())["aggregate"]
    # right ear at -6.02 dB: swapping flips the ILD sign, an error of ~12 dB
    assert agg["ild_mae"]["mean"] > 10.0
    assert agg["ipd_mae"]["mean"] > 0.3


def test_reference_mode_matches_spatial_module(tmp_path):
    """The pipeline's reference-mode figure is the published unit: mean over files of x100 values."""
    from isdrama.metrics.spatial import SpatialMAEConfig, spatial_mae_files

    _write_pairs(tmp_path, lambda gt: np.roll(gt, 5, axis=0) * 0.8)
    rc, out = _run(tmp_path, "--metrics", "ipd,ild", "--mode", "reference")
    assert rc == 0
    agg = json.loads((out / "results.json").read_text())["aggregate"]
    names = [f"utt{i}" for i in range(3)]
    direct = spatial_mae_files(
        [tmp_path / "gt" / f"{n}.wav" for n in names],
        [tmp_path / "infer" / f"{n}.wav" for n in names],
        SpatialMAEConfig(mode="reference"),
    )
    assert agg["ipd_mae"]["mean"] == pytest.approx(direct.ipd_mae, rel=1e-6)
    assert agg["ild_mae"]["mean"] == pytest.approx(direct.ild_mae, rel=1e-6)


def test_mismatched_names_refused(tmp_path, capsys):
    _write_pairs(tmp_path, lambda gt: gt)
    (tmp_path / "infer" / "utt2.wav").rename(tmp_path / "infer" / "other.wav")
    rc, _ = _run(tmp_path, "--metrics", "ipd")
    err = capsys.readouterr().err
    assert rc == 2 and "only in" in err and "utt2" in err and "other" in err


def test_bad_audio_is_named(tmp_path, capsys):
    _write_pairs(tmp_path, lambda gt: gt)
    sf.write(tmp_path / "infer" / "utt1.wav", np.zeros(4800, np.float32), SR)  # mono
    rc, _ = _run(tmp_path, "--metrics", "ipd")
    err = capsys.readouterr().err
    assert rc == 2 and "utt1.wav" in err


def test_unknown_metric_and_bad_texts(tmp_path, capsys):
    _write_pairs(tmp_path, lambda gt: gt)
    assert _run(tmp_path, "--metrics", "ipd,foo")[0] == 2
    assert "unknown metric" in capsys.readouterr().err
    (tmp_path / "texts.json").write_text("{not json")
    assert _run(tmp_path, "--metrics", "cer", "--texts", str(tmp_path / "texts.json"))[0] == 2
    assert "texts.json: malformed JSON" in capsys.readouterr().err


def test_cli_options_reach_the_metric_configs():
    from isdrama.metrics.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["gt", "infer", "--mode", "reference", "--workers", "3", "--batch-size", "4", "--metrics", "ipd,ild"]
    )
    cfg = config_from_args(args)
    assert (cfg.mode, cfg.metrics) == ("reference", ("ipd", "ild"))
    assert (cfg.spatial.workers, cfg.spatial.batch_size, cfg.spatial_ast.batch_size) == (3, 4, 4)
    with pytest.raises(ValueError, match="workers"):
        config_from_args(build_parser().parse_args(["gt", "infer", "--workers", "0"]))
