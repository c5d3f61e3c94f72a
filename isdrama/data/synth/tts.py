"""Dry speech with espeak-ng (subprocess), synthesised word by word so word timings are exact.

Every word is synthesised alone (English with an ``en-us`` voice; Mandarin through the voice
``cmn-latn-pinyin`` fed tone-numbered pinyin from pypinyin), trimmed of espeak's leading and
trailing silence, resampled to 48 kHz and concatenated. Silences between clauses (and a few
random hesitations), plus a lead-in and a tail, are inserted as ``<SP>`` words of their own. A
word's duration is the exact number of samples it occupies, so the word list tiles the audio.

A speaker is a ``Voice``: an espeak variant (timbre), a pitch and a speed; the same voice reads
both languages. ``speaker_pool`` builds a fixed pool, so a speaker id keeps its voice everywhere.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
from scipy.signal import resample_poly

from isdrama.data.schema import DATA_SAMPLE_RATE, SILENCE_TOKEN
from isdrama.data.synth.text import TextLine

#: espeak-ng variants used for the speaker pool, alternating male/female timbres.
VOICE_VARIANTS = ("m1", "f2", "m3", "f4", "m7", "f1", "m2", "f5", "m4", "f3", "m6", "m5")
#: Golden-ratio steps spread pitch and speed evenly over their ranges across the pool.
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak variant, pitch (0-99) and speed (words per minute)."""

    speaker: str
    variant: str
    pitch: int
    speed: int

    def espeak_args(self, base_voice: str) -> list[str]:
        return ["-v", f"{base_voice}+{self.variant}", "-p", str(self.pitch), "-s", str(self.speed)]


@dataclass(frozen=True)
class TTSConfig:
    """espeak-ng synthesis and the pause/level layout of a line (seconds unless noted)."""

    espeak_binary: str = "espeak-ng"
    english_voice: str = "en-us"
    mandarin_voice: str = "cmn-latn-pinyin"
    sample_rate: int = DATA_SAMPLE_RATE
    pitch_range: tuple[int, int] = (25, 75)  #: espeak -p range spread over the pool
    speed_range: tuple[int, int] = (160, 210)  #: espeak -s range (isolated words are slow)
    trim_threshold_db: float = -40.0  #: word edges: first/last sample above this re peak
    trim_margin: float = 0.004  #: kept around the trimmed word
    fade: float = 0.002  #: raised-cosine fade in/out of every word
    word_gap: tuple[float, float] = (0.015, 0.05)  #: silence closing a word followed by a word
    clause_pause: tuple[float, float] = (0.18, 0.35)  #: <SP> after a comma
    hesitation_probability: float = 0.06  #: chance of an extra <SP> after any word
    hesitation_pause: tuple[float, float] = (0.1, 0.2)
    edge_pause: tuple[float, float] = (0.15, 0.3)  #: <SP> lead-in and tail of every line
    speech_rms_dbfs: float = -24.0  #: RMS of the voiced part after levelling
    timeout: float = 20.0  #: seconds per espeak call
    parallel_calls: int = 8  #: espeak-ng processes run at once
    cache_words: int = 1500  #: word audios kept per process


@dataclass(frozen=True)
class SpeechLine:
    """Dry mono speech of one line.

    audio: (N,) float64 at ``sample_rate``; words include ``<SP>``; samples: (W,) int, the exact
    length of every word, summing to N.
    """

    audio: np.ndarray
    words: tuple[str, ...]
    samples: np.ndarray
    text: str
    language: str
    sample_rate: int

    @property
    def durations(self) -> np.ndarray:
        """(W,) word durations in seconds."""
        return self.samples / self.sample_rate


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed on an input."""


def speaker_pool(size: int, cfg: TTSConfig = TTSConfig()) -> tuple[Voice, ...]:
    """``size`` distinct voices ``spk00, spk01, ...``; voice i is the same for every dataset."""
    voices = []
    for i in range(size):
        u = (i * _GOLDEN) % 1.0
        v = (0.5 + i * _GOLDEN * _GOLDEN) % 1.0
        pitch = int(round(cfg.pitch_range[0] + u * (cfg.pitch_range[1] - cfg.pitch_range[0])))
        speed = int(round(cfg.speed_range[0] + v * (cfg.speed_range[1] - cfg.speed_range[0])))
        voices.append(Voice(f"spk{i:02d}", VOICE_VARIANTS[i % len(VOICE_VARIANTS)], pitch, speed))
    return tuple(voices)


def _parse_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Mono int16 WAV from espeak's stdout (its data size field is a placeholder) -> (x, sr)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakError(f"espeak-ng returned no WAV for {what}")
    pos, sr = 12, None
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag == b"fmt ":
            channels, sr = struct.unpack("<HI", data[pos + 10 : pos + 16])
            if channels != 1:
                raise EspeakError(f"espeak-ng returned {channels} channels for {what}")
        elif tag == b"data":
            body = data[pos + 8 :]
            pcm = np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
            if sr is None:
                break
            return pcm, int(sr)
        pos += 8 + size
    raise EspeakError(f"espeak-ng WAV for {what} has no fmt/data chunk")


def _espeak_binary(cfg: TTSConfig) -> str:
    binary = shutil.which(cfg.espeak_binary)
    if binary is None:
        raise EspeakError(f"'{cfg.espeak_binary}' not found on PATH; install it (apt-get install espeak-ng)")
    return binary


def _finish(proc: subprocess.Popen, text: str, cfg: TTSConfig) -> tuple[np.ndarray, int]:
    """Collect one espeak-ng process: (samples, rate), or EspeakError naming the input."""
    try:
        out, err = proc.communicate(timeout=cfg.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise EspeakError(f"espeak-ng timed out after {cfg.timeout} s on {text!r}") from None
    if proc.returncode != 0:
        raise EspeakError(
            f"espeak-ng failed ({proc.returncode}) on {text!r} with {proc.args[2:-1]}: "
            f"{err.decode(errors='replace').strip()[-300:]}"
        )
    return _parse_wav(out, repr(text))


def pinyin_of(word: str) -> str:
    """Tone-numbered pinyin of a Mandarin word ('你好' -> 'ni3 hao3'; neutral tone = 5)."""
    from pypinyin import Style, lazy_pinyin

    return " ".join(lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True))


def _trim(x: np.ndarray, sr: int, cfg: TTSConfig) -> np.ndarray:
    """Cut leading/trailing silence (below trim_threshold_db re peak) and fade the edges."""
    peak = np.abs(x).max() if x.size else 0.0
    if peak == 0:
        raise EspeakError("espeak-ng produced silence")
    loud = np.flatnonzero(np.abs(x) >= peak * 10 ** (cfg.trim_threshold_db / 20))
    margin = int(round(cfg.trim_margin * sr))
    x = x[max(loud[0] - margin, 0) : loud[-1] + margin + 1].copy()
    n_fade = min(int(round(cfg.fade * sr)), len(x) // 2)
    if n_fade:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_fade) / n_fade)
        x[:n_fade] *= ramp
        x[-n_fade:] *= ramp[::-1]
    return x


def _spoken(cfg: TTSConfig, language: str, word: str) -> tuple[str, str]:
    """(espeak base voice, text to speak) of a word."""
    if language == "zh":
        return cfg.mandarin_voice, pinyin_of(word)
    if language == "en":
        return cfg.english_voice, word
    raise ValueError(f"unknown language {language!r}; expected 'en' or 'zh'")


#: Per-process cache of trimmed, resampled word audio (float32), oldest entries dropped first.
_WORD_CACHE: dict[tuple, np.ndarray] = {}


def word_audio(cfg: TTSConfig, voice: Voice, language: str, words: Sequence[str]) -> list[np.ndarray]:
    """Trimmed audio (float32 at cfg.sample_rate) of each word, synthesised alone.

    Words not cached yet are synthesised by up to ``cfg.parallel_calls`` espeak-ng processes at once.
    """
    keys = [(cfg, voice, language, w) for w in words]
    # this call's words are held here: evicting old entries below may drop any of them from the cache
    found = {k: _WORD_CACHE[k] for k in dict.fromkeys(keys) if k in _WORD_CACHE}
    todo = [k for k in dict.fromkeys(keys) if k not in found]
    binary = _espeak_binary(cfg) if todo else ""
    for start in range(0, len(todo), cfg.parallel_calls):
        running = []
        for key in todo[start : start + cfg.parallel_calls]:
            base, text = _spoken(cfg, language, key[-1])
            cmd = [binary, "--stdout", *voice.espeak_args(base), text]
            running.append((key, text, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        for key, text, proc in running:
            x, sr = _finish(proc, text, cfg)
            x = _trim(x, sr, cfg)
            ratio = Fraction(cfg.sample_rate, sr)
            if ratio != 1:
                x = resample_poly(x, ratio.numerator, ratio.denominator)
            x = x.astype(np.float32)
            x.setflags(write=False)
            while len(_WORD_CACHE) >= cfg.cache_words:
                _WORD_CACHE.pop(next(iter(_WORD_CACHE)))
            _WORD_CACHE[key] = found[key] = x
    return [found[k] for k in keys]


def _uniform_samples(rng: np.random.Generator, bounds: tuple[float, float], sr: int) -> int:
    return int(round(rng.uniform(*bounds) * sr))


def synthesize_line(line: TextLine, voice: Voice, rng: np.random.Generator, cfg: TTSConfig = TTSConfig()) -> SpeechLine:
    """Dry speech of a text line with exact per-word sample counts (see the module docstring)."""
    sr = cfg.sample_rate
    pieces: list[np.ndarray] = []
    words: list[str] = []

    def pause(bounds: tuple[float, float]) -> None:
        pieces.append(np.zeros(_uniform_samples(rng, bounds, sr)))
        words.append(SILENCE_TOKEN)

    pause(cfg.edge_pause)
    audios = word_audio(cfg, voice, line.language, line.words)
    for i, (word, comma, audio) in enumerate(zip(line.words, line.pause_after, audios)):
        last = i == len(line.words) - 1
        follow = (
            cfg.clause_pause
            if comma
            else (cfg.hesitation_pause if not last and rng.random() < cfg.hesitation_probability else None)
        )
        gap = 0 if last or follow is not None else _uniform_samples(rng, cfg.word_gap, sr)
        pieces.append(np.concatenate([audio.astype(np.float64), np.zeros(gap)]))
        words.append(word)
        if follow is not None:
            pause(follow)
    pause(cfg.edge_pause)
    audio = np.concatenate(pieces)
    voiced = np.abs(audio) > 10 ** (cfg.trim_threshold_db / 20) * np.abs(audio).max()
    rms = np.sqrt(np.mean(audio[voiced] ** 2))
    audio *= 10 ** (cfg.speech_rms_dbfs / 20) / rms
    samples = np.array([len(p) for p in pieces], dtype=np.int64)
    return SpeechLine(
        audio=audio, words=tuple(words), samples=samples, text=line.text, language=line.language, sample_rate=sr
    )
