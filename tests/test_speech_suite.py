"""SpeechMetrics end to end on espeak speech, and a skipped metric that says why."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isdrama.metrics.speech import (
    AsrConfig,
    SpeakerConfig,
    SpeechItem,
    SpeechMetrics,
    SpeechMetricsConfig,
    summarize,
)
from isdrama.metrics.speech.espeak import espeak_available, synthesize

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

TEXT = "Please call Stella and ask her to bring these things from the store."


def test_all_speech_metrics_on_espeak_items():
    gt, sr = synthesize(TEXT, "en+m3")
    prompt, _ = synthesize("We walked to the market and bought fresh bread.", "en+m3")
    other, _ = synthesize(TEXT, "en+f2")
    binaural_gt = np.stack([gt, gt], axis=1)  # (T, 2): scored on the channel average
    items = [
        SpeechItem("same", gen=gt, gen_sr=sr, gt=binaural_gt, gt_sr=sr, prompt=prompt, prompt_sr=sr, text=TEXT),
        SpeechItem("other", gen=other, gen_sr=sr, gt=binaural_gt, gt_sr=sr, prompt=prompt, prompt_sr=sr, text=TEXT),
        SpeechItem("no_refs", gen=gt, gen_sr=sr),
    ]
    sm = SpeechMetrics(SpeechMetricsConfig(asr=AsrConfig(num_threads=2), cer_on_gt=True))
    assert sm.unavailable == {}
    rows = sm.score(items)
    same, other_row, bare = rows
    assert same["cer"] < 0.3 and same["gt_cer"] == same["cer"]
    assert same["ffe"] == 0.0 and same["vde"] == 0.0
    assert same["sim_gt"] == pytest.approx(1.0, abs=1e-5)
    assert same["sim_prompt"] > other_row["sim_prompt"]
    assert other_row["sim_gt"] < same["sim_gt"]
    assert other_row["ffe"] > 0.1  # another voice, another pitch contour
    assert bare == {"name": "no_refs"}  # nothing to compare with: no numbers at all
    summary = summarize(rows)
    assert summary["ffe_n"] == 2 and math.isclose(summary["ffe"], (same["ffe"] + other_row["ffe"]) / 2)


def test_unavailable_metric_is_skipped_with_its_reason(tmp_path):
    cfg = SpeechMetricsConfig(
        metrics=("sim", "ffe"), speaker=SpeakerConfig(backend="wavlm", model=str(tmp_path / "no_model"))
    )
    sm = SpeechMetrics(cfg)
    assert set(sm.unavailable) == {"sim"} and "cannot load WavLMForXVector" in sm.unavailable["sim"]
    wav, sr = synthesize(TEXT, "en")
    row = sm.score([SpeechItem("a", gen=wav, gen_sr=sr, gt=wav, gt_sr=sr, prompt=wav, prompt_sr=sr, text=TEXT)])[0]
    assert "sim_prompt" not in row and "sim_gt" not in row and "cer" not in row
    assert row["ffe"] == 0.0
    with pytest.raises(ValueError, match="unknown speech metric"):
        SpeechMetrics(SpeechMetricsConfig(metrics=("mos",)))


def test_bad_item_errors_name_the_item():
    from isdrama.metrics.speech import InvalidAudio, InvalidText

    sm = SpeechMetrics(SpeechMetricsConfig(metrics=("ffe",)))
    good = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    with pytest.raises(InvalidAudio, match=r"^line_07: generated: the waveform is empty"):
        sm.score([SpeechItem("line_07", gen=np.zeros(0), gen_sr=16000, gt=good, gt_sr=16000)])
    with pytest.raises(InvalidAudio, match=r"^line_08: reference: .*non-finite"):
        sm.score([SpeechItem("line_08", gen=good, gen_sr=16000, gt=good * np.nan, gt_sr=16000)])
    sm = SpeechMetrics(SpeechMetricsConfig(metrics=("cer",), asr=AsrConfig(num_threads=2)))
    with pytest.raises(InvalidAudio, match=r"^line_09: generated audio: .*non-finite"):
        sm.score([SpeechItem("line_09", gen=np.full(16000, np.inf), gen_sr=16000, text="hello")])
    with pytest.raises(InvalidText, match=r"^line_10: .*empty after normalisation"):
        sm.score([SpeechItem("line_10", gen=good, gen_sr=16000, text="?!")])
