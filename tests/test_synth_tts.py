"""espeak-ng speech: word timings true to the audio, voices, Mandarin through pinyin."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from isdrama.data.schema import SILENCE_TOKEN
from isdrama.data.synth.text import TextLine, random_line
from isdrama.data.synth.tts import EspeakError, TTSConfig, pinyin_of, speaker_pool, synthesize_line

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

SR = 48_000
MS = SR // 1000


def silent_runs(x: np.ndarray, min_len: int, threshold: float) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at least min_len where |x| stays below threshold."""
    quiet = np.concatenate([[False], np.abs(x) < threshold, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = list(zip(edges[::2], edges[1::2]))
    return [(a, b) for a, b in runs if b - a >= min_len]


@pytest.fixture(scope="module")
def lines():
    rng = np.random.default_rng(7)
    voices = speaker_pool(4)
    out = []
    for k in range(6):
        language = "en" if k % 2 == 0 else "zh"
        out.append(synthesize_line(random_line(rng, language), voices[k % 4], rng))
    return out


def test_words_tile_the_audio(lines):
    for speech in lines:
        assert speech.samples.sum() == len(speech.audio)
        assert abs(speech.durations.sum() - len(speech.audio) / SR) < 1e-9
        assert speech.words[0] == speech.words[-1] == SILENCE_TOKEN
        assert np.all(speech.samples > 0)


def test_word_boundaries_match_audio_energy(lines):
    """<SP> spans are silent; every word sounds from its start to (at most a short gap before) its
    end; every long silence of the audio lies inside an <SP>."""
    for speech in lines:
        x = speech.audio
        peak = np.abs(x).max()
        bounds = np.concatenate([[0], np.cumsum(speech.samples)])
        sp_spans = []
        for word, a, b in zip(speech.words, bounds[:-1], bounds[1:]):
            seg = x[a:b]
            if word == SILENCE_TOKEN:
                assert np.abs(seg).max() < 1e-3 * peak, f"sound inside <SP> at {a / SR:.3f} s"
                sp_spans.append((a, b))
            else:
                assert np.abs(seg).max() > 0.1 * peak, f"word {word!r} is (nearly) silent"
                audible = np.flatnonzero(np.abs(seg) > 0.01 * np.abs(seg).max())
                assert audible[0] < 10 * MS, f"word {word!r} starts {audible[0] / MS:.0f} ms late"
                tail = (len(seg) - audible[-1]) / MS
                assert tail < 1000 * TTSConfig().word_gap[1] + 10, f"word {word!r} ends {tail:.0f} ms early"
        for a, b in silent_runs(x, min_len=120 * MS, threshold=1e-3 * peak):
            inside = any(sa - 10 * MS <= a and b <= sb + 10 * MS for sa, sb in sp_spans)
            assert inside, f"silence {a / SR:.3f}-{b / SR:.3f} s not covered by an <SP>"


def test_clause_pauses_become_sp_words():
    rng = np.random.default_rng(0)
    line = TextLine(
        words=("Well", "we", "found", "it"),
        text="Well, we found it.",
        language="en",
        pause_after=(True, False, False, False),
    )
    cfg = dataclasses.replace(TTSConfig(), hesitation_probability=0.0)
    speech = synthesize_line(line, speaker_pool(1)[0], rng, cfg)
    assert speech.words == (SILENCE_TOKEN, "Well", SILENCE_TOKEN, "we", "found", "it", SILENCE_TOKEN)
    sp = speech.samples[2] / SR
    assert cfg.clause_pause[0] - 1e-3 <= sp <= cfg.clause_pause[1] + 1e-3


def test_mandarin_uses_tone_numbered_pinyin(lines):
    assert pinyin_of("你好") == "ni3 hao3"
    assert pinyin_of("好的") == "hao3 de5"
    zh = [s for s in lines if s.language == "zh"]
    assert zh and all(any("\u4e00" <= ch <= "\u9fff" for ch in s.text) for s in zh)


def test_speaker_pool_is_fixed_and_distinct():
    pool = speaker_pool(8)
    assert pool == speaker_pool(8)
    assert len({(v.variant, v.pitch, v.speed) for v in pool}) == 8
    assert [v.speaker for v in pool] == [f"spk{i:02d}" for i in range(8)]


def f0(x: np.ndarray) -> float:
    """Median F0 (Hz) of voiced 40 ms frames by autocorrelation, 60-400 Hz."""
    frame = 40 * MS
    values = []
    for start in range(0, len(x) - frame, frame):
        seg = x[start : start + frame]
        if np.sqrt(np.mean(seg**2)) < 0.3 * np.sqrt(np.mean(x**2)):
            continue
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        lo, hi = SR // 400, SR // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            values.append(SR / lag)
    return float(np.median(values))


def test_voices_differ_in_pitch():
    rng = np.random.default_rng(0)
    line = TextLine(
        words=("we", "were", "all", "alone"), text="We were all alone.", language="en", pause_after=(False,) * 4
    )
    pool = speaker_pool(8)
    low = min(pool, key=lambda v: v.pitch)
    high = max((v for v in pool if v.variant[0] == low.variant[0]), key=lambda v: v.pitch)
    assert high.pitch > low.pitch + 15
    f_low = f0(synthesize_line(line, low, rng).audio)
    f_high = f0(synthesize_line(line, high, rng).audio)
    assert f_high > 1.1 * f_low


def test_missing_espeak_binary_is_reported():
    line = TextLine(words=("hello",), text="Hello.", language="en", pause_after=(False,))
    cfg = dataclasses.replace(TTSConfig(), espeak_binary="espeak-ng-does-not-exist")
    with pytest.raises(EspeakError, match="espeak-ng-does-not-exist"):
        synthesize_line(line, speaker_pool(1)[0], np.random.default_rng(0), cfg)


def test_joined_sentences_pause_between_them():
    from isdrama.data.synth.text import join_lines

    rng = np.random.default_rng(3)
    first, second = random_line(rng, "zh"), random_line(rng, "zh")
    joined = join_lines([first, second])
    assert joined.words == first.words + second.words and joined.text == first.text + second.text
    assert joined.pause_after[len(first.words) - 1] and not joined.pause_after[-1]
    with pytest.raises(ValueError):
        join_lines([first, random_line(rng, "en")])


def test_word_cache_smaller_than_a_line_keeps_every_word():
    """A full word cache evicts old entries while a line is synthesised; the line still gets
    every word (the generator once failed with a KeyError on a Mandarin word here)."""
    from isdrama.data.synth import tts

    small = TTSConfig(cache_words=2)
    voice = speaker_pool(1)[0]
    words = ["one", "two", "three", "four", "two"]
    tts._WORD_CACHE.clear()
    audios = tts.word_audio(small, voice, "en", words)
    assert len(audios) == 5 and all(a.size > 0 for a in audios)
    assert audios[1] is audios[4]  # the same word, synthesised once
    assert len(tts._WORD_CACHE) <= 2
    full = tts.word_audio(TTSConfig(), voice, "en", words)
    assert all(np.array_equal(a, b) for a, b in zip(audios, full))
