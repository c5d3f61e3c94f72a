"""Speaker similarity (SIM): pluggable speaker encoders and cosine scores.

Interface (``SpeakerEncoder``): ``embed(wavs, sr) -> (B, D)`` float array of L2-normalised
embeddings, one per waveform ((T,), (C, T) or (T, C), mixed to mono; resampled to 16 kHz).

Backends (imported lazily):
- ``resemblyzer`` (offline default): the GE2E d-vector encoder whose weights ship in the
  resemblyzer wheel; audio goes through resemblyzer's own preprocessing (volume
  normalisation, long-silence trimming with webrtcvad).
- ``wavlm``: ``transformers.WavLMForXVector`` from a hub id or a local folder (default
  "microsoft/wavlm-base-plus-sv"). The paper and seed-tts-eval use a WavLM-large + ECAPA-TDNN
  verification model that transformers cannot load; this is the closest loadable model.
  A checkpoint without trained x-vector weights is refused, never scored with a random head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from isdrama.metrics.speech.audio import check_sr, prepare
from isdrama.metrics.speech.errors import InvalidAudio, MetricUnavailable

SPK_SR = 16000
BACKENDS = ("resemblyzer", "wavlm")


@dataclass
class SpeakerConfig:
    """Speaker encoder choice.

    Attributes:
        backend: "resemblyzer" (offline default) | "wavlm".
        model: wavlm only: hub id or local folder (None -> "microsoft/wavlm-base-plus-sv").
        device: torch device string.
        min_speech_s: shortest speech (after resemblyzer's silence trimming, or raw length for
            wavlm) accepted, in seconds; shorter audio raises InvalidAudio.
    """

    backend: str = "resemblyzer"
    model: str | None = None
    device: str = "cpu"
    min_speech_s: float = 0.3


@runtime_checkable
class SpeakerEncoder(Protocol):
    """What every speaker encoder offers."""

    name: str

    def embed(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        """(B, D) L2-normalised speaker embeddings of waveforms at ``sr`` Hz."""
        ...


def _prepare_all(wavs: Sequence[np.ndarray], sr: int, min_s: float) -> list[np.ndarray]:
    if isinstance(wavs, np.ndarray):
        raise TypeError("embed expects a list of waveforms, not one array")
    if len(wavs) == 0:
        raise ValueError("embed needs at least one waveform")
    sr = check_sr(sr)
    out = []
    for i, w in enumerate(wavs):
        audio = prepare(w, sr, SPK_SR, name=f"wavs[{i}]", min_seconds=min_s)
        if not np.any(audio):
            raise InvalidAudio(f"wavs[{i}]: the waveform is silent (all zeros); no speaker to embed")
        out.append(audio)
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


class ResemblyzerEncoder:
    """resemblyzer's GE2E voice encoder (256-d); weights from its wheel, no network."""

    name = "resemblyzer"

    def __init__(self, cfg: SpeakerConfig) -> None:
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as err:
            raise MetricUnavailable(
                "sim",
                self.name,
                f"install it with `pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels librosa` ({err})",
            ) from err
        self.cfg = cfg
        self._preprocess = preprocess_wav
        self.model = VoiceEncoder(device=cfg.device, verbose=False)

    def embed(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        embs = []
        for i, audio in enumerate(_prepare_all(wavs, sr, 0.0)):
            speech = self._preprocess(audio)  # volume normalisation + long-silence trimming
            if speech.size < self.cfg.min_speech_s * SPK_SR:
                raise InvalidAudio(
                    f"wavs[{i}]: only {speech.size / SPK_SR:.2f} s of speech after silence trimming "
                    f"(minimum {self.cfg.min_speech_s} s)"
                )
            embs.append(self.model.embed_utterance(speech))
        return _l2(np.stack(embs).astype(np.float64))


class WavLMEncoder:
    """transformers WavLMForXVector speaker-verification model (hub id or local folder)."""

    name = "wavlm"
    default_model = "microsoft/wavlm-base-plus-sv"

    def __init__(self, cfg: SpeakerConfig) -> None:
        import torch
        from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor, WavLMForXVector

        self.cfg = cfg
        self.model_id = cfg.model or self.default_model
        self.device = torch.device(cfg.device)
        try:
            model, info = WavLMForXVector.from_pretrained(self.model_id, output_loading_info=True)
        except (OSError, ValueError) as err:
            raise MetricUnavailable(
                "sim",
                self.name,
                f"cannot load WavLMForXVector {self.model_id!r} (not cached and offline, or not a WavLM folder): {err}",
            ) from err
        # classifier/objective only train the verification loss; embeddings do not use them
        missing = [k for k in info.get("missing_keys", []) if not k.startswith(("classifier.", "objective."))]
        if missing:
            raise MetricUnavailable(
                "sim",
                self.name,
                f"{self.model_id!r} has no trained x-vector weights ({len(missing)} missing, e.g. "
                f"{missing[:4]}); a randomly initialised head would give meaningless SIM",
            )
        self.model = model.to(self.device).eval()
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(self.model_id)
        except (OSError, ValueError):  # folder without preprocessor_config.json
            self.extractor = Wav2Vec2FeatureExtractor(sampling_rate=SPK_SR, do_normalize=False)

    def embed(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        import torch

        embs = []
        for audio in _prepare_all(wavs, sr, self.cfg.min_speech_s):  # one at a time: no padding effects
            feats = self.extractor(audio, sampling_rate=SPK_SR, return_tensors="pt")
            with torch.inference_mode():
                out = self.model(input_values=feats.input_values.to(self.device))
            embs.append(out.embeddings[0].float().cpu().numpy())
        return _l2(np.stack(embs).astype(np.float64))


_REGISTRY = {"resemblyzer": ResemblyzerEncoder, "wavlm": WavLMEncoder}


def build_speaker_encoder(cfg: SpeakerConfig) -> SpeakerEncoder:
    """Create the encoder named by ``cfg.backend``.

    Raises:
        ValueError: unknown backend.
        MetricUnavailable: package or weights not available here.
    """
    if cfg.backend not in _REGISTRY:
        raise ValueError(f"SpeakerConfig.backend must be one of {BACKENDS}, got {cfg.backend!r}")
    return _REGISTRY[cfg.backend](cfg)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (B, D) and (B, D) (or (D,)) arrays -> (B,) or scalar."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(_l2(a) * _l2(b), axis=-1)


def speaker_similarity(
    encoder: SpeakerEncoder,
    generated: Sequence[np.ndarray],
    sr: int,
    references: Sequence[np.ndarray],
    ref_sr: int | None = None,
) -> np.ndarray:
    """SIM: cosine between the speaker embeddings of ``generated[i]`` and ``references[i]``.

    Use the prompt audio as references for "SIM to prompt" and the ground truth for
    "SIM to GT" (the paper reports both). Returns (B,) floats in [-1, 1].
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated waveforms but {len(references)} references")
    return cosine(encoder.embed(generated, sr), encoder.embed(references, ref_sr or sr))
