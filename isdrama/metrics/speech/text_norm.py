"""Transcript normalisation as in seed-tts-eval (BytedanceSpeech/seed-tts-eval, run_wer.py).

Rules (seed-tts-eval ``process_one``):
1. remove every punctuation character except the ASCII apostrophe ``'``;
   seed-tts-eval's set is ``string.punctuation`` + ``zhon.hanzi.punctuation``; here it is
   ``string.punctuation``, its full-width forms, and every Unicode punctuation character
   (category P*), which contains zhon's set without needing the package;
2. collapse runs of whitespace;
3. Chinese ("zh"): score per character (every non-space character is one token);
   English ("en"): lower-case, score per word.
``lang="auto"`` picks "zh" when the reference contains a CJK ideograph, else "en".

Optional (off by default, as in seed-tts-eval's English path): traditional -> simplified
Chinese through ``zhconv`` (seed-tts-eval applies it to the Paraformer output only).
"""

from __future__ import annotations

import re
import string
import unicodedata

LANGS = ("zh", "en", "auto")

_KEEP = "'"
_ASCII_PUNCT = set(string.punctuation) - {_KEEP}
_FULLWIDTH_PUNCT = {chr(ord(c) + 0xFEE0) for c in string.punctuation}
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WS_RE = re.compile(r"\s+")


def _is_punct(ch: str) -> bool:
    if ch == _KEEP:
        return False
    return ch in _ASCII_PUNCT or ch in _FULLWIDTH_PUNCT or unicodedata.category(ch).startswith("P")


def strip_punctuation(text: str) -> str:
    """Remove punctuation (all but the ASCII apostrophe) and collapse whitespace."""
    out = "".join(ch for ch in text if not _is_punct(ch))
    return _WS_RE.sub(" ", out).strip()


def has_cjk(text: str) -> bool:
    """True when ``text`` contains at least one CJK ideograph."""
    return _CJK_RE.search(text) is not None


def resolve_lang(lang: str, reference: str) -> str:
    """Map ``lang`` ("zh" | "en" | "auto") to "zh" or "en" for one reference."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    if lang == "auto":
        return "zh" if has_cjk(reference) else "en"
    return lang


def to_simplified(text: str) -> str:
    """Traditional -> simplified Chinese with zhconv (optional dependency)."""
    try:
        import zhconv
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("traditional->simplified conversion needs `pip install zhconv`") from err
    return zhconv.convert(text, "zh-cn")


def normalize(text: str, lang: str) -> str:
    """Normalise one transcript for lang "zh" or "en" (see module doc)."""
    if lang not in ("zh", "en"):
        raise ValueError(f"normalize needs lang 'zh' or 'en', got {lang!r}")
    text = strip_punctuation(text)
    return text.lower() if lang == "en" else text


def word_tokens(text: str, lang: str) -> list[str]:
    """Scoring tokens of the seed-tts-eval headline metric: characters ("zh") or words ("en")."""
    norm = normalize(text, lang)
    if lang == "zh":
        return [ch for ch in norm if not ch.isspace()]
    return norm.split()


def char_tokens(text: str, lang: str) -> list[str]:
    """Character tokens after normalisation, whitespace removed (CER for any language)."""
    return [ch for ch in normalize(text, lang) if not ch.isspace()]
