"""CER / WER of a transcript against its reference, through jiwer's edit distance.

Units (after seed-tts-eval normalisation, see ``text_norm``):
- ``cer``: characters, whitespace removed, any language;
- ``wer``: seed-tts-eval's headline unit: characters for Mandarin (so wer == cer for "zh",
  exactly what seed-tts-eval reports as "wer" for zh), lower-cased words for English.
Rates are (S + D + I) / N with N the number of reference tokens; they can exceed 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jiwer
import numpy as np

from isdrama.metrics.speech.errors import InvalidText
from isdrama.metrics.speech.text_norm import char_tokens, normalize, resolve_lang, word_tokens


@dataclass(frozen=True)
class EditCounts:
    """Edit operations aligning hypothesis tokens to ``n_ref`` reference tokens."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    n_ref: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return self.errors / self.n_ref


@dataclass(frozen=True)
class TextScore:
    """CER and WER of one (reference, hypothesis) pair; ``lang`` is the resolved language."""

    lang: str
    chars: EditCounts
    words: EditCounts
    reference_norm: str
    hypothesis_norm: str

    @property
    def cer(self) -> float:
        return self.chars.rate

    @property
    def wer(self) -> float:
        return self.words.rate


def edit_counts(ref_tokens: Sequence[str], hyp_tokens: Sequence[str]) -> EditCounts:
    """Levenshtein alignment of two token lists with jiwer (tokens must not contain spaces)."""
    if not ref_tokens:
        raise InvalidText("the reference has no tokens after normalisation")
    if not hyp_tokens:  # every reference token deleted; jiwer is not asked about empty strings
        return EditCounts(0, len(ref_tokens), 0, 0, len(ref_tokens))
    out = jiwer.process_words(" ".join(ref_tokens), " ".join(hyp_tokens))
    counts = EditCounts(out.substitutions, out.deletions, out.insertions, out.hits, len(ref_tokens))
    assert counts.hits + counts.substitutions + counts.deletions == counts.n_ref
    return counts


def score_text(reference: str, hypothesis: str, lang: str = "auto") -> TextScore:
    """Score one transcript against its reference.

    Args:
        reference: the script line (ground truth text).
        hypothesis: the ASR transcript of the audio.
        lang: "zh", "en" or "auto" (zh when the reference contains CJK ideographs).

    Raises:
        InvalidText: the reference is empty after removing punctuation.
    """
    if not isinstance(reference, str) or not isinstance(hypothesis, str):
        raise TypeError("reference and hypothesis must be str")
    lang = resolve_lang(lang, reference)
    ref_chars = char_tokens(reference, lang)
    if not ref_chars:
        raise InvalidText(f"reference {reference!r} is empty after normalisation")
    return TextScore(
        lang=lang,
        chars=edit_counts(ref_chars, char_tokens(hypothesis, lang)),
        words=edit_counts(word_tokens(reference, lang), word_tokens(hypothesis, lang)),
        reference_norm=normalize(reference, lang),
        hypothesis_norm=normalize(hypothesis, lang),
    )


def aggregate(scores: Sequence[TextScore]) -> dict[str, float]:
    """Corpus summary: mean of per-utterance rates (seed-tts-eval) and pooled rates.

    Returns keys ``cer``, ``wer`` (utterance means), ``cer_pooled``, ``wer_pooled``
    (total errors / total reference tokens) and ``n``.
    """
    if not scores:
        raise ValueError("aggregate needs at least one TextScore")
    return {
        "cer": float(np.mean([s.cer for s in scores])),
        "wer": float(np.mean([s.wer for s in scores])),
        "cer_pooled": sum(s.chars.errors for s in scores) / sum(s.chars.n_ref for s in scores),
        "wer_pooled": sum(s.words.errors for s in scores) / sum(s.words.n_ref for s in scores),
        "n": float(len(scores)),
    }
