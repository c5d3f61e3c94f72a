"""Random drama lines in English and Mandarin from small built-in vocabularies.

A line is a list of words plus its written form with punctuation; ``pause_after`` marks the
words after which a reader pauses (commas), which the TTS turns into ``<SP>`` silences.
Everything is drawn from the caller's numpy Generator, so a seed fixes the text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANGUAGES = ("en", "zh")

# English: a tiny phrase grammar. Each slot is a list of phrases (a phrase may have several words).
_EN = {
    "opener": ["well", "listen", "look", "honestly", "oh", "wait", "come on", "you know", "so"],
    "subject": [
        "I",
        "you",
        "we",
        "they",
        "she",
        "he",
        "the captain",
        "my brother",
        "your mother",
        "the old man",
        "our neighbour",
        "the doctor",
        "nobody",
        "everyone",
    ],
    "verb": [
        "found",
        "wanted",
        "left",
        "remember",
        "opened",
        "forgot",
        "brought",
        "heard",
        "saw",
        "need",
        "lost",
        "carried",
        "promised",
        "sold",
        "painted",
        "borrowed",
    ],
    "object": [
        "the letter",
        "a small key",
        "the red door",
        "her old coat",
        "the last train",
        "a cup of tea",
        "the garden gate",
        "that strange song",
        "the blue box",
        "my only photograph",
        "the silver ring",
        "a bag of apples",
        "the map",
    ],
    "place": [
        "in the kitchen",
        "by the river",
        "at the station",
        "under the stairs",
        "near the window",
        "in the morning",
        "after dinner",
        "before the storm",
        "on the bridge",
        "behind the theatre",
    ],
    "question": ["where is", "who took", "why did you hide", "have you seen", "what about", "do you want"],
    "reply": ["yes", "no", "of course", "not now", "never", "maybe later", "I think so", "absolutely not"],
}

# Mandarin: phrases by role, words separated by spaces; pinyin comes from pypinyin at synthesis.
_ZH = {
    "time": ["今天", "明天", "昨天", "晚上", "现在", "刚才", "后来", "早上"],
    "subject": ["我", "你", "他", "她", "我们", "你们", "他们", "老师", "妈妈", "哥哥", "朋友", "船长"],
    "modal": ["想", "要", "不想", "必须", "可以", "应该"],
    "verb": ["去", "看", "买", "找", "带", "打开", "记得", "送给", "拿走", "告诉"],
    "object": [
        "那 封 信",
        "钥匙",
        "红色 的 门",
        "火车票",
        "一 杯 茶",
        "花园",
        "这 首 歌",
        "蓝色 的 盒子",
        "照片",
        "戒指",
        "地图",
        "苹果",
    ],
    "place": ["在 厨房", "在 河边", "在 车站", "在 楼下", "在 窗户 旁边", "在 桥 上", "在 剧院 后面"],
    "adverb": ["很", "非常", "有点", "真的", "特别"],
    "adjective": ["高兴", "累", "生气", "奇怪", "害怕", "安静", "着急", "紧张"],
    "reply": ["好 的", "没有", "当然", "不行", "也许 吧", "对"],
}


@dataclass(frozen=True)
class TextLine:
    """One line of dialogue: words (no punctuation), the written text, pauses after words."""

    words: tuple[str, ...]
    text: str
    language: str
    pause_after: tuple[bool, ...]


def _pick(rng: np.random.Generator, table: dict, slot: str) -> list[str]:
    options = table[slot]
    return [options[int(rng.integers(len(options)))]]


def _english(rng: np.random.Generator) -> tuple[list[list[str]], str]:
    """Clauses (lists of phrases) and the sentence-final punctuation."""
    kind = int(rng.integers(4))
    if kind == 0:  # statement
        clauses = [
            _pick(rng, _EN, "subject")
            + _pick(rng, _EN, "verb")
            + _pick(rng, _EN, "object")
            + (_pick(rng, _EN, "place") if rng.random() < 0.6 else [])
        ]
        end = "."
    elif kind == 1:  # question
        clauses = [
            _pick(rng, _EN, "question")
            + _pick(rng, _EN, "object")
            + (_pick(rng, _EN, "place") if rng.random() < 0.5 else [])
        ]
        end = "?"
    elif kind == 2:  # reply + statement
        clauses = [
            _pick(rng, _EN, "reply"),
            _pick(rng, _EN, "subject") + _pick(rng, _EN, "verb") + _pick(rng, _EN, "object"),
        ]
        end = "."
    else:  # opener + statement
        clauses = [
            _pick(rng, _EN, "opener"),
            _pick(rng, _EN, "subject") + _pick(rng, _EN, "verb") + _pick(rng, _EN, "object") + _pick(rng, _EN, "place"),
        ]
        end = "!" if rng.random() < 0.3 else "."
    return clauses, end


def _mandarin(rng: np.random.Generator) -> tuple[list[list[str]], str]:
    kind = int(rng.integers(4))
    if kind == 0:
        clauses = [
            _pick(rng, _ZH, "time"),
            _pick(rng, _ZH, "subject") + _pick(rng, _ZH, "modal") + _pick(rng, _ZH, "verb") + _pick(rng, _ZH, "object"),
        ]
        end = "。"
    elif kind == 1:
        clauses = [_pick(rng, _ZH, "subject") + _pick(rng, _ZH, "adverb") + _pick(rng, _ZH, "adjective")]
        end = "。"
    elif kind == 2:
        clauses = [
            _pick(rng, _ZH, "reply"),
            _pick(rng, _ZH, "subject") + _pick(rng, _ZH, "place") + _pick(rng, _ZH, "verb") + _pick(rng, _ZH, "object"),
        ]
        end = "。"
    else:
        clauses = [
            _pick(rng, _ZH, "subject")
            + _pick(rng, _ZH, "modal")
            + _pick(rng, _ZH, "verb")
            + _pick(rng, _ZH, "object")
            + ["吗"]
        ]
        end = "？"
    return clauses, end


def random_line(rng: np.random.Generator, language: str) -> TextLine:
    """A random line in ``language`` ('en' or 'zh')."""
    if language == "en":
        clauses, end = _english(rng)
    elif language == "zh":
        clauses, end = _mandarin(rng)
    else:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    words = [[w for phrase in clause for w in phrase.split()] for clause in clauses]
    if language == "en":
        words[0][0] = words[0][0][:1].upper() + words[0][0][1:]
        text = ", ".join(" ".join(c) for c in words) + end
    else:
        text = "，".join("".join(c) for c in words) + end
    flat = tuple(w for clause in words for w in clause)
    pauses = tuple(
        i == len(clause) - 1 and c < len(words) - 1 for c, clause in enumerate(words) for i in range(len(clause))
    )
    return TextLine(words=flat, text=text, language=language, pause_after=pauses)


def join_lines(lines: list[TextLine]) -> TextLine:
    """Several sentences of one language read as one line, with a pause between sentences."""
    if not lines or len({line.language for line in lines}) != 1:
        raise ValueError("join_lines: expected one or more lines of a single language")
    separator = " " if lines[0].language == "en" else ""
    pauses = tuple(
        p or (k < len(lines) - 1 and i == len(line.words) - 1)
        for k, line in enumerate(lines)
        for i, p in enumerate(line.pause_after)
    )
    return TextLine(
        words=tuple(w for line in lines for w in line.words),
        text=separator.join(line.text for line in lines),
        language=lines[0].language,
        pause_after=pauses,
    )
