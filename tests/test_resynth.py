"""Codec resynthesis writes an evaluation-ready folder (gt/, infer/, prompt/, texts.json)."""

from __future__ import annotations

import json

import soundfile as sf

from isdrama.data.cli import main as data_cli


def test_resynth_folder(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "rs"
    rc = data_cli(
        [
            "resynth",
            str(tiny_dataset),
            str(out),
            "--split",
            "all",
            "--limit",
            "2",
            "--bandwidth",
            "1.5",
            "--pretrained",
            "false",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    gt = sorted(p.name for p in (out / "gt").glob("*.wav"))
    inf = sorted(p.name for p in (out / "infer").glob("*.wav"))
    assert gt == inf and len(gt) == 2
    for name in gt:
        a, b = sf.info(str(out / "gt" / name)), sf.info(str(out / "infer" / name))
        assert (b.samplerate, b.channels) == (48_000, 2)
        assert abs(a.frames - b.frames) <= 640  # within one codec frame (ceil to whole frames)
    texts = json.loads((out / "texts.json").read_text())
    assert set(texts) == {n[:-4] for n in gt} and all(t.startswith("line ") for t in texts.values())
    assert len(list((out / "prompt").glob("*.wav"))) == 2
    assert "isdrama-eval" in capsys.readouterr().out
