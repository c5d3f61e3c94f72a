"""Text -> phone/char tokens, the token vocabulary, and word -> token frame durations.

Tokenisation (``mode``):

- ``"auto"`` (default): Han characters -> pinyin phones with tones via pypinyin (an initial,
  when the syllable has one, then a tone-numbered final: 北京 -> ``b ei3 j ing1``; the neutral
  tone is 5, ü is written ``v``); every other character -> itself, lower-cased (English and
  other scripts become character tokens).
- ``"char"``: every character -> itself (no pinyin).
- ``"byte"``: every character -> its UTF-8 bytes (``<0xE5>`` ...).

Latin letters share ids with the pinyin initials spelt the same way (b, m, n ...): a deliberate,
harmless overlap of similar sounds. Any character whose token is not in the vocabulary falls back
to its UTF-8 byte tokens, which the default vocabulary always holds, so nothing needs a download
and nothing becomes ``<UNK>``.
Words of the form ``<...>`` (MRSDrama's ``<SP>``) are special tokens; a word that yields no
token at all becomes ``<SP>`` so its duration is never lost.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from isdrama.data.schema import SILENCE_TOKEN

PAD_TOKEN = "<PAD>"
UNK_TOKEN = "<UNK>"
SIL_TOKEN = SILENCE_TOKEN  # "<SP>"
#: Special tokens, always the first ids of a vocabulary in this order (pad = 0).
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, SIL_TOKEN)

#: Pinyin initials (pypinyin strict mode: y/w are not initials).
PINYIN_INITIALS = (
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "x",
    "zh",
    "ch",
    "sh",
    "r",
    "z",
    "c",
    "s",
)
#: Pinyin finals without tone (pypinyin strict mode), plus syllabic interjections (m, n, ng,
#: hm, hng) that pypinyin cannot split.
PINYIN_FINALS = (
    "a",
    "ai",
    "an",
    "ang",
    "ao",
    "e",
    "ei",
    "en",
    "eng",
    "er",
    "i",
    "ia",
    "ian",
    "iang",
    "iao",
    "ie",
    "in",
    "ing",
    "iong",
    "iou",
    "o",
    "ong",
    "ou",
    "u",
    "ua",
    "uai",
    "uan",
    "uang",
    "uei",
    "uen",
    "ueng",
    "uo",
    "v",
    "van",
    "ve",
    "vn",
    "ê",
    "m",
    "n",
    "ng",
    "hm",
    "hng",
)
PINYIN_TONES = ("1", "2", "3", "4", "5")
#: Characters of the default char inventory (after lower-casing).
DEFAULT_CHARS = tuple("abcdefghijklmnopqrstuvwxyz0123456789" + "'-,.!?:;\"()")

_HAN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+)")
_SPECIAL_WORD = re.compile(r"^<[^<>\s]+>$")
_PUNCT_MAP = {
    "。": ".",
    "、": ",",
    "“": '"',
    "”": '"',
    "‘": "'",
    "’": "'",
    "—": "-",
    "《": '"',
    "》": '"',
    "「": '"',
    "」": '"',
    "『": '"',
    "』": '"',
}
_MODES = ("auto", "char", "byte")


def byte_token(b: int) -> str:
    """The token of one UTF-8 byte value 0..255, e.g. ``<0x41>``."""
    return f"<0x{b:02X}>"


class Vocabulary:
    """Token <-> id mapping. Ids 0, 1, 2 are ``<PAD>``, ``<UNK>``, ``<SP>``.

    Saved with the model (``ContentEncoder`` keeps it in its state dict) and as JSON.
    """

    FORMAT = "isdrama.vocabulary"
    VERSION = 1

    def __init__(self, tokens: Iterable[str]):
        ordered = list(SPECIAL_TOKENS)
        seen = set(ordered)
        for tok in tokens:
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"vocabulary tokens must be non-empty strings, got {tok!r}")
            if tok not in seen:
                seen.add(tok)
                ordered.append(tok)
        self._tokens = ordered
        self._index = {t: i for i, t in enumerate(ordered)}

    # construction ---------------------------------------------------------------------------
    @classmethod
    def default(cls) -> "Vocabulary":
        """Fixed inventory: specials, pinyin initials, toned finals, chars, 256 byte tokens."""
        finals = [f + t for f in PINYIN_FINALS for t in PINYIN_TONES]
        return cls([*PINYIN_INITIALS, *finals, *DEFAULT_CHARS, *(byte_token(b) for b in range(256))])

    def extended(self, tokens: Iterable[str]) -> "Vocabulary":
        """A new vocabulary with ``tokens`` appended (existing ids unchanged)."""
        return Vocabulary([*self._tokens, *tokens])

    # lookup ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self._tokens)

    @property
    def pad_id(self) -> int:
        return self._index[PAD_TOKEN]

    @property
    def unk_id(self) -> int:
        return self._index[UNK_TOKEN]

    @property
    def sil_id(self) -> int:
        return self._index[SIL_TOKEN]

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Tokens -> ids (unknown tokens -> ``<UNK>``)."""
        unk = self.unk_id
        return [self._index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens."""
        return [self._tokens[int(i)] for i in ids]

    # persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": self.FORMAT, "version": self.VERSION, "tokens": list(self._tokens)}

    @classmethod
    def from_state_dict(cls, state: dict, source: str = "vocabulary state") -> "Vocabulary":
        if not isinstance(state, dict) or state.get("format") != cls.FORMAT:
            raise ValueError(f"{source}: not an isdrama vocabulary (expected key 'format' = '{cls.FORMAT}')")
        if state.get("version") != cls.VERSION:
            raise ValueError(
                f"{source} [key 'version']: unsupported version {state.get('version')!r}, expected {cls.VERSION}"
            )
        tokens = state.get("tokens")
        if not isinstance(tokens, list) or tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{source} [key 'tokens']: expected a list starting with {list(SPECIAL_TOKENS)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"{source} [key 'tokens']: duplicate tokens")
        return cls(tokens)

    def to_json(self) -> str:
        return json.dumps(self.state_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str = "vocabulary JSON") -> "Vocabulary":
        return cls.from_state_dict(json.loads(text), source)

    def save(self, path: Path | str) -> None:
        """Write the vocabulary as JSON (atomically)."""
        from isdrama.utils.io import atomic_write_json

        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: Path | str) -> "Vocabulary":
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))


@dataclass
class TokenizedLine:
    """One line as model input: token ids (L,), their frame durations (L,) or None, and the
    index of the word each token came from (L,) (for word-level features such as BERT)."""

    tokens: list[str]
    ids: np.ndarray
    word_index: np.ndarray
    durations: Optional[np.ndarray] = None


class PhoneTokenizer:
    """Text/word lists -> tokens -> ids (see the module docstring for the modes).

    Args:
        vocab: the vocabulary (default :meth:`Vocabulary.default`).
        mode: ``"auto"`` (pinyin for Han, chars otherwise), ``"char"`` or ``"byte"``.
        lowercase: lower-case non-Han characters.
    """

    def __init__(self, vocab: Optional[Vocabulary] = None, mode: str = "auto", lowercase: bool = True):
        if mode not in _MODES:
            raise ValueError(f"tokenizer mode must be one of {_MODES}, got {mode!r}")
        self.vocab = vocab if vocab is not None else Vocabulary.default()
        self.mode = mode
        self.lowercase = lowercase

    # characters -----------------------------------------------------------------------------
    def _bytes(self, text: str) -> list[str]:
        return [byte_token(b) for b in text.encode("utf-8")]

    def _char(self, ch: str) -> list[str]:
        ch = _PUNCT_MAP.get(ch, ch)
        out: list[str] = []
        for c in unicodedata.normalize("NFKC", ch):
            if c.isspace():
                continue
            c = c.lower() if self.lowercase else c
            out.extend([c] if c in self.vocab else self._bytes(c))
        return out

    def _han(self, run: str) -> list[str]:
        from pypinyin import Style, lazy_pinyin
        from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

        syllables = lazy_pinyin(run, style=Style.TONE3, neutral_tone_with_five=True, errors=lambda s: [None] * len(s))
        if len(syllables) != len(run):  # never seen; keep one result per character
            syllables = [
                lazy_pinyin(c, style=Style.TONE3, neutral_tone_with_five=True, errors=lambda s: [None])[0] for c in run
            ]
        out: list[str] = []
        for ch, syl in zip(run, syllables):
            if not syl or not syl.isascii():
                out.extend(self._char(ch))
                continue
            initial = to_initials(syl, strict=True)
            final = to_finals_tone3(syl, strict=True, neutral_tone_with_five=True)
            if not final:  # syllabic interjections (m2, ng4, hm5)
                initial, final = "", syl
            if final[-1:] not in PINYIN_TONES:
                final += "5"
            phones = ([initial] if initial else []) + [final]
            if all(p in self.vocab for p in phones):
                out.extend(phones)
            else:
                out.extend(self._char(ch))
        return out

    # words and text -------------------------------------------------------------------------
    def tokenize_word(self, word: str) -> list[str]:
        """One word -> its tokens (possibly several; ``[]`` for whitespace-only input)."""
        if _SPECIAL_WORD.match(word):
            return [word if word in self.vocab else SIL_TOKEN]
        if self.mode == "byte":
            return self._bytes("".join(word.split()))
        if self.mode == "char":
            return [t for ch in word for t in self._char(ch)]
        out: list[str] = []
        for i, part in enumerate(_HAN.split(word)):
            if not part:
                continue
            if i % 2 == 1:  # odd parts of a capturing split are Han runs
                out.extend(self._han(part))
            else:
                out.extend(t for ch in part for t in self._char(ch))
        return out

    def tokenize_words(self, words: Sequence[str]) -> tuple[list[str], list[int]]:
        """Words -> (tokens, tokens per word). A word with no tokens becomes ``<SP>``."""
        tokens: list[str] = []
        counts: list[int] = []
        for word in words:
            toks = self.tokenize_word(word) or [SIL_TOKEN]
            tokens.extend(toks)
            counts.append(len(toks))
        return tokens, counts

    def position_spans(self, words: Sequence[str]) -> np.ndarray:
        """(L,) each token's position span, numbered from 0 in order: one span per word, except
        that each token of a word holding Han characters is a span of its own (Mandarin text has no
        spaces, so the words of a recording's alignment cannot be found again in a script's text;
        per token, training and inference agree). The span lengths of
        :func:`~isdrama.models.content.frame_position_features`'s word part."""
        spans: list[int] = []
        n = 0
        for word in words:
            count = len(self.tokenize_word(word) or [SIL_TOKEN])
            if _HAN.search(word) and not _SPECIAL_WORD.match(word):
                spans.extend(range(n, n + count))
                n += count
            else:
                spans.extend([n] * count)
                n += 1
        return np.asarray(spans, dtype=np.int64)

    @staticmethod
    def split_text(text: str) -> list[str]:
        """Raw text -> words (whitespace split), as used at inference without a word list."""
        return text.split()

    def encode_words(
        self,
        words: Sequence[str],
        word_durations: Optional[Sequence[float]] = None,
        frame_rate: Optional[float] = None,
        total_frames: Optional[int] = None,
    ) -> TokenizedLine:
        """Words (+ their durations in seconds) -> :class:`TokenizedLine`.

        With ``word_durations`` and ``frame_rate`` the token durations are frames whose sum is
        ``round(sum(word_durations) * frame_rate)``, or exactly ``total_frames`` if given.
        """
        tokens, counts = self.tokenize_words(words)
        ids = np.asarray(self.vocab.encode(tokens), dtype=np.int64)
        word_index = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        durations = None
        if word_durations is not None:
            if frame_rate is None:
                raise ValueError("encode_words: word_durations given without frame_rate")
            durations = word_to_token_frames(word_durations, counts, frame_rate, total_frames)
        return TokenizedLine(tokens, ids, word_index, durations)

    def __call__(self, words: Sequence[str], word_frames: Sequence[int], language: Optional[str] = None):
        """Data-module hook: (words, integer frames per word, language) ->
        (token ids (L,) long tensor, token frames (L,) long tensor, same total).

        ``language`` is accepted for the data module's interface; in ``auto`` mode the script
        of each character decides (Han -> pinyin), so it is not needed.
        """
        import torch

        tokens, counts = self.tokenize_words(words)
        frames = split_word_frames(word_frames, counts)
        return (torch.as_tensor(self.vocab.encode(tokens), dtype=torch.long), torch.as_tensor(frames, dtype=torch.long))

    def encode_text(self, text: str) -> TokenizedLine:
        """Raw text -> :class:`TokenizedLine` without durations (inference)."""
        return self.encode_words(self.split_text(text))


def seconds_to_frames(
    durations: Sequence[float] | np.ndarray, frame_rate: float, total_frames: Optional[int] = None
) -> np.ndarray:
    """Durations in seconds (L,) -> integer frames (L,) by rounding cumulative end times.

    The sum is exactly ``round(sum(durations) * frame_rate)``, or ``total_frames`` when given
    (the end times are then rescaled to it, e.g. to the audio's codec-frame count).
    """
    d = np.asarray(durations, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"durations must be 1-D, got shape {d.shape}")
    if (d < 0).any() or not np.isfinite(d).all():
        raise ValueError("durations must be finite and >= 0")
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    ends = np.cumsum(d) * frame_rate
    if total_frames is not None:
        if total_frames < 0:
            raise ValueError(f"total_frames must be >= 0, got {total_frames}")
        total = ends[-1] if len(ends) else 0.0
        if total > 0:
            ends = ends * (total_frames / total)
        elif len(ends):  # all-zero durations: spread evenly
            ends = np.arange(1, len(ends) + 1) * (total_frames / len(ends))
    frames = np.diff(np.round(ends).astype(np.int64), prepend=0)
    if total_frames is not None and len(frames):
        frames[-1] += total_frames - frames.sum()  # guards float round-off only
    return frames


def split_word_frames(word_frames: Sequence[int], tokens_per_word: Sequence[int]) -> np.ndarray:
    """Integer frames per word (W,) -> integer frames per token (L,), each word's frames split
    evenly over its tokens by rounded cumulative boundaries (every word's sum is kept)."""
    wf = np.asarray(word_frames, dtype=np.int64)
    counts = np.asarray(tokens_per_word, dtype=np.int64)
    if wf.shape != counts.shape:
        raise ValueError(f"word_frames ({wf.size}) and tokens_per_word ({counts.size}) must have the same length")
    if (counts < 1).any() or (wf < 0).any():
        raise ValueError("every word needs >= 1 token and >= 0 frames")
    out = []
    for n, c in zip(wf.tolist(), counts.tolist()):
        bounds = np.round(np.arange(c + 1) * (n / c)).astype(np.int64)
        out.append(np.diff(bounds))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def word_to_token_frames(
    word_durations: Sequence[float],
    tokens_per_word: Sequence[int],
    frame_rate: float,
    total_frames: Optional[int] = None,
) -> np.ndarray:
    """Split each word's duration (s) evenly over its tokens; return token frames (L,).

    Total preserved exactly (see :func:`seconds_to_frames`).
    """
    wd = np.asarray(word_durations, dtype=np.float64)
    counts = np.asarray(tokens_per_word, dtype=np.int64)
    if wd.shape != counts.shape:
        raise ValueError(
            f"word_durations ({wd.shape[0] if wd.ndim else 0}) and "
            f"tokens_per_word ({counts.shape[0] if counts.ndim else 0}) "
            f"must have the same length"
        )
    if (counts < 1).any():
        raise ValueError("every word needs at least one token")
    token_seconds = np.repeat(wd / counts, counts)
    return seconds_to_frames(token_seconds, frame_rate, total_frames)


def collate_lines(lines: Sequence[TokenizedLine], pad_id: int = 0) -> dict:
    """Pad tokenized lines into a batch (torch tensors).

    Returns ``tokens`` (B, L) long, ``token_mask`` (B, L) bool, ``word_index`` (B, L) long and,
    when every line has durations, ``durations`` (B, L) long (0 at padding).
    """
    import torch

    if not lines:
        raise ValueError("collate_lines: empty batch")
    B, L = len(lines), max(len(line.ids) for line in lines)
    tokens = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.bool)
    word_index = torch.zeros(B, L, dtype=torch.long)
    with_dur = all(line.durations is not None for line in lines)
    durations = torch.zeros(B, L, dtype=torch.long) if with_dur else None
    for b, line in enumerate(lines):
        n = len(line.ids)
        tokens[b, :n] = torch.as_tensor(line.ids)
        mask[b, :n] = True
        word_index[b, :n] = torch.as_tensor(line.word_index)
        if durations is not None:
            durations[b, :n] = torch.as_tensor(line.durations)
    out = {"tokens": tokens, "token_mask": mask, "word_index": word_index}
    if durations is not None:
        out["durations"] = durations
    return out
