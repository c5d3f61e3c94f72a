"""`isdrama-data synth` arguments and run()."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from isdrama.data.synth import cli
from isdrama.data.synth.hrtf import DEFAULT_SOFA

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not DEFAULT_SOFA.is_file(),
    reason="needs espeak-ng and libmysofa's MIT KEMAR SOFA file",
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_become_the_config(tmp_path: Path):
    args = parse(
        str(tmp_path),
        "--dramas",
        "5",
        "--seed",
        "3",
        "--lines",
        "2-6",
        "--speakers",
        "2",
        "--language",
        "zh",
        "--reverb",
        "--video-size",
        "160x120",
        "--sofa",
        str(DEFAULT_SOFA),
    )
    config = cli.config_from_args(args)
    assert (config.n_dramas, config.seed, config.lines_per_drama, config.speakers_per_drama) == (5, 3, (2, 6), (2, 2))
    assert config.language == "zh" and config.reverb and config.video
    assert (config.video_config.width, config.video_config.height) == (160, 120)
    assert config.hrtf.sofa_path == str(DEFAULT_SOFA)
    with pytest.raises(SystemExit):
        parse(str(tmp_path), "--lines", "6-2")
    with pytest.raises(SystemExit):
        parse(str(tmp_path), "--video-size", "big")


def test_run_writes_a_dataset_and_prints_a_summary(tmp_path: Path, capsys):
    out = tmp_path / "ds"
    assert cli.run(parse(str(out), "--dramas", "1", "--lines", "2", "--workers", "0", "--quiet", "--no-video")) == 0
    printed = capsys.readouterr().out
    assert "1 dramas, 2 lines" in printed and str(out) in printed
    assert len(list(out.glob("*/*/*.json"))) == 1 and not list(out.glob("*/*/*.mp4"))
    # the split every tool reads, with the default fractions
    from isdrama.data.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, dataset_drama_ids, load_splits

    splits = load_splits(out)
    assert sorted(splits.assignment) == dataset_drama_ids(out) and len(splits.assignment) == 1
    assert (splits.val_fraction, splits.test_fraction) == (DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION)
    assert "splits:" in printed and str(out / "splits.json") in printed


def test_run_reports_a_missing_sofa_file(tmp_path: Path, capsys):
    missing = tmp_path / "missing.sofa"
    assert (
        cli.run(parse(str(tmp_path / "ds"), "--dramas", "1", "--workers", "0", "--quiet", "--sofa", str(missing))) == 2
    )
    assert str(missing) in capsys.readouterr().err
