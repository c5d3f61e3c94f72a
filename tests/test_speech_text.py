"""CER/WER through jiwer on hand-computed strings (seed-tts-eval normalisation)."""

from __future__ import annotations

import pytest

from isdrama.metrics.speech import InvalidText, aggregate, normalize, score_text, strip_punctuation


def test_chinese_one_substitution_in_ten_characters():
    s = score_text("今天天气很好我们出去", "今天天气很好我们出来", lang="zh")
    assert s.chars.n_ref == 10
    assert (s.chars.substitutions, s.chars.deletions, s.chars.insertions) == (1, 0, 0)
    assert s.cer == pytest.approx(0.1)
    assert s.wer == pytest.approx(0.1)  # seed-tts-eval scores Mandarin per character


def test_chinese_punctuation_and_spaces_ignored():
    assert score_text("今天天气很好，我们出去。", "今天 天气很好！我们“出去”", lang="zh").cer == 0.0
    assert score_text("《你好》：世界？", "你好世界", lang="zh").cer == 0.0


def test_chinese_deletion_and_insertion():
    s = score_text("我们出去玩", "我出去玩吧", lang="zh")  # delete 们, insert 吧
    assert (s.chars.substitutions, s.chars.deletions, s.chars.insertions) == (0, 1, 1)
    assert s.cer == pytest.approx(2 / 5)


def test_english_case_and_punctuation_ignored():
    s = score_text("Hello, World!", "hello world", lang="en")
    assert s.wer == 0.0 and s.cer == 0.0
    assert s.reference_norm == "hello world"


def test_english_word_and_character_rates():
    s = score_text("The cat sat on the mat.", "the cat sat on a mat", lang="en")
    assert s.words.n_ref == 6 and s.words.substitutions == 1
    assert s.wer == pytest.approx(1 / 6)
    # characters: "thecatsatonthemat" (17) -> "thecatsatonamat": "the" -> "a" costs 3 edits
    assert s.chars.n_ref == 17
    assert s.cer == pytest.approx(3 / 17)


def test_english_deletion_insertion_counts():
    s = score_text("a b c d", "a c d e", lang="en")
    assert (s.words.substitutions, s.words.deletions, s.words.insertions) == (0, 1, 1)
    assert s.wer == pytest.approx(0.5)


def test_apostrophe_kept_as_in_seed_tts_eval():
    assert score_text("Don't stop", "dont stop", lang="en").wer == pytest.approx(0.5)
    assert score_text("Don't stop", "don't stop.", lang="en").wer == 0.0


def test_fullwidth_and_unicode_punctuation_stripped():
    assert strip_punctuation("你好！？（世界）…—「」") == "你好世界"
    assert strip_punctuation("it’s  ok") == "its ok"  # only the ASCII apostrophe is kept
    assert normalize("Hello ,  World", "en") == "hello world"


def test_empty_hypothesis_is_all_deletions():
    s = score_text("今天天气", "", lang="zh")
    assert s.chars.deletions == 4 and s.cer == 1.0
    assert score_text("one two", "...", lang="en").wer == 1.0


def test_rates_can_exceed_one():
    assert score_text("hi", "hi there my friend", lang="en").wer == pytest.approx(3.0)


def test_auto_language_detection():
    assert score_text("你好world", "你好word", lang="auto").lang == "zh"
    s = score_text("你好world", "你好word", lang="auto")
    assert s.chars.n_ref == 7 and s.cer == pytest.approx(1 / 7)
    assert score_text("Hello there", "hello", lang="auto").lang == "en"


def test_empty_reference_errors():
    with pytest.raises(InvalidText, match="empty after normalisation"):
        score_text("。！", "something", lang="zh")
    with pytest.raises(ValueError, match="lang must be one of"):
        score_text("a", "a", lang="fr")
    with pytest.raises(TypeError):
        score_text(None, "a")  # type: ignore[arg-type]


def test_aggregate_mean_and_pooled():
    a = score_text("今天天气很好我们出去", "今天天气很好我们出来", lang="zh")  # 1/10
    b = score_text("你好", "", lang="zh")  # 2/2
    agg = aggregate([a, b])
    assert agg["cer"] == pytest.approx((0.1 + 1.0) / 2)
    assert agg["cer_pooled"] == pytest.approx(3 / 12)
    assert agg["n"] == 2
    with pytest.raises(ValueError):
        aggregate([])
