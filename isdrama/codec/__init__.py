"""Binaural EnCodec: waveform <-> tokens <-> latents (see :mod:`isdrama.codec.binaural`)."""

from isdrama.codec.binaural import TOKEN_FORMAT_VERSION, BinauralCodec
from isdrama.codec.config import MODEL_SPECS, CodecConfig, EncodecSpec, KMeansConfig
from isdrama.codec.kmeans_init import KMeansReport, init_codebooks_kmeans
from isdrama.codec.weights import PretrainedUnavailableError, RandomCodecWeightsWarning

__all__ = [
    "BinauralCodec",
    "CodecConfig",
    "KMeansConfig",
    "EncodecSpec",
    "MODEL_SPECS",
    "TOKEN_FORMAT_VERSION",
    "init_codebooks_kmeans",
    "KMeansReport",
    "PretrainedUnavailableError",
    "RandomCodecWeightsWarning",
]
