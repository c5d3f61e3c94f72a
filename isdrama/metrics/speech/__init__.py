"""Speech metrics: CER/WER (pluggable ASR), SIM (pluggable speaker encoder), FFE (F0 frame error).

Heavy backends (faster-whisper, transformers models, FunASR, resemblyzer, torchcrepe) are
imported only when a backend is built. A backend that cannot run here raises
``MetricUnavailable``; bad input raises ``InvalidAudio`` / ``InvalidText``.
"""

from isdrama.metrics.speech.asr import (
    AsrBackend,
    AsrConfig,
    FasterWhisperAsr,
    HfWhisperAsr,
    ParaformerAsr,
    build_asr,
    default_offline_whisper_dir,
)
from isdrama.metrics.speech.cer import EditCounts, TextScore, aggregate, score_text
from isdrama.metrics.speech.errors import InvalidAudio, InvalidText, MetricUnavailable
from isdrama.metrics.speech.ffe import FfeConfig, FfeResult, ffe, ffe_from_tracks
from isdrama.metrics.speech.pitch import PitchConfig, PitchTrack, track_pitch
from isdrama.metrics.speech.speaker import (
    ResemblyzerEncoder,
    SpeakerConfig,
    SpeakerEncoder,
    WavLMEncoder,
    build_speaker_encoder,
    cosine,
    speaker_similarity,
)
from isdrama.metrics.speech.suite import SpeechItem, SpeechMetrics, SpeechMetricsConfig, summarize
from isdrama.metrics.speech.text_norm import normalize, strip_punctuation

__all__ = [
    "AsrBackend",
    "AsrConfig",
    "FasterWhisperAsr",
    "HfWhisperAsr",
    "ParaformerAsr",
    "build_asr",
    "default_offline_whisper_dir",
    "EditCounts",
    "TextScore",
    "aggregate",
    "score_text",
    "InvalidAudio",
    "InvalidText",
    "MetricUnavailable",
    "FfeConfig",
    "FfeResult",
    "ffe",
    "ffe_from_tracks",
    "PitchConfig",
    "PitchTrack",
    "track_pitch",
    "ResemblyzerEncoder",
    "SpeakerConfig",
    "SpeakerEncoder",
    "WavLMEncoder",
    "build_speaker_encoder",
    "cosine",
    "speaker_similarity",
    "SpeechItem",
    "SpeechMetrics",
    "SpeechMetricsConfig",
    "summarize",
    "normalize",
    "strip_punctuation",
]
