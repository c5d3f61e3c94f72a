"""Codec configuration (the Hydra group ``configs/codec/``) and the facts of each EnCodec model.

Every hyper-parameter of the codec lives in :class:`CodecConfig` / :class:`KMeansConfig` with a
documented default; :data:`MODEL_SPECS` holds *facts* of the published EnCodec models (sample
rate, hop, bandwidths, checkpoint names), not choices.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Union

from isdrama.utils.config import build_config

#: Accepted spellings of ``CodecConfig.pretrained``.
_PRETRAINED_VALUES = {
    "auto": "auto",
    "true": "true",
    "yes": "true",
    "1": "true",
    "false": "false",
    "no": "false",
    "0": "false",
}


@dataclass(frozen=True)
class EncodecSpec:
    """Facts of one published EnCodec model (encodec 0.1.1, ``encodec/model.py``).

    ``frames_per_step``: EnCodec frames packed into one model frame so that every codec runs at
    the same 75 frames/s time base (1 for the 24 kHz model, 2 for the 150 Hz 48 kHz model).
    """

    name: str
    sample_rate: int  # Hz at the EnCodec input
    channels: int  # audio channels one EnCodec call takes (1 = mono, 2 = stereo)
    hop_length: int  # input samples per EnCodec frame
    dimension: int  # latent width per EnCodec frame
    codebook_size: int  # entries per RVQ codebook
    bandwidths: tuple[float, ...]  # kbps the model supports
    checkpoint_name: str  # file name of the pretrained weights (EnCodec's download)
    causal: bool  # causal convolutions: zero padding at the end leaves earlier frames unchanged
    default_normalize: bool  # EnCodec scales each clip to unit RMS before encoding
    frames_per_step: int

    @property
    def encodec_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


MODEL_SPECS: dict[str, EncodecSpec] = {
    "encodec_24khz": EncodecSpec(
        "encodec_24khz",
        24_000,
        1,
        320,
        128,
        1024,
        (1.5, 3.0, 6.0, 12.0, 24.0),
        "encodec_24khz-d7cc33bc.th",
        causal=True,
        default_normalize=False,
        frames_per_step=1,
    ),
    "encodec_48khz": EncodecSpec(
        "encodec_48khz",
        48_000,
        2,
        320,
        128,
        1024,
        (3.0, 6.0, 12.0, 24.0),
        "encodec_48khz-7e698e3e.th",
        causal=False,
        default_normalize=True,
        frames_per_step=2,
    ),
}


@dataclass
class KMeansConfig:
    """Codebook initialisation by k-means on encoder outputs (needed without pretrained weights).

    n_iters: Lloyd iterations per RVQ layer (EnCodec's own ``kmeans_iters`` default is 50).
    max_frames: at most this many latent frames are clustered (a seeded random subset beyond).
    seconds: seconds of dataset audio `isdrama-data tokenize` feeds to k-means when weights are random.
    seed: seeds the frame subset and the initial centroids.
    chunk_size: frames per distance computation (bounds memory at chunk_size x codebook_size floats).
    """

    n_iters: int = 50
    max_frames: int = 200_000
    seconds: float = 600.0
    seed: int = 0
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        for name in ("n_iters", "max_frames", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"codec.kmeans.{name} must be >= 1, got {getattr(self, name)!r}")
        if float(self.seconds) <= 0:
            raise ValueError(f"codec.kmeans.seconds must be > 0, got {self.seconds!r}")


@dataclass
class CodecConfig:
    """The binaural codec: EnCodec applied to binaural audio (configs/codec/*.yaml).

    model: ``encodec_24khz`` (default: the 24 kHz mono model applied to each ear, 75 frames/s) or
        ``encodec_48khz`` (the 48 kHz stereo model; 150 EnCodec frames/s packed in pairs to 75/s).
    bandwidth: kbps; sets the number of RVQ codebooks n_q (24 kHz: 1.5/3/6/12/24 -> 2/4/8/16/32;
        48 kHz: 3/6/12/24 -> 2/4/8/16 per EnCodec frame).
    pretrained: ``auto`` (download EnCodec's weights; on failure warn loudly, continue with random
        weights), ``true`` (fail without them) or ``false`` (never try; random weights).
    checkpoint: local weights, used instead of any download: a directory holding EnCodec's
        official file (checksum checked, EnCodec's ``repository``), that file itself, a raw
        EnCodec state dict, or a codec saved by :func:`isdrama.codec.save_codec`.
    seed: seeds the random initialisation (so random-weight codecs are reproducible).
    normalize: scale each clip to unit RMS before encoding (None = the model's own default:
        off for 24 kHz, on for 48 kHz). The scale is not part of the tokens.
    kmeans: codebook initialisation settings (see :class:`KMeansConfig`).
    architecture: None = the published EnCodec model; else a trained codec's widths and decoder
        (:class:`isdrama.codec.architecture.CodecArchitecture`, configs/model/codec). A codec
        checkpoint carries its architecture, so ``checkpoint`` alone is enough to load one.
    """

    model: str = "encodec_24khz"
    bandwidth: float = 6.0
    pretrained: Union[str, bool] = "auto"
    checkpoint: Optional[str] = None
    seed: int = 0
    normalize: Optional[bool] = None
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    architecture: Optional[Any] = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_SPECS:
            raise ValueError(f"codec.model must be one of {sorted(MODEL_SPECS)}, got {self.model!r}")
        raw = str(self.pretrained).strip().lower()
        if raw not in _PRETRAINED_VALUES:
            raise ValueError(f"codec.pretrained must be auto, true or false, got {self.pretrained!r}")
        self.pretrained = _PRETRAINED_VALUES[raw]
        spec = self.spec
        self.bandwidth = float(self.bandwidth)
        if self.bandwidth not in spec.bandwidths:
            raise ValueError(
                f"codec.bandwidth {self.bandwidth:g} kbps is not supported by {self.model}; "
                f"expected one of {', '.join(f'{b:g}' for b in spec.bandwidths)}"
            )
        if self.checkpoint is not None:
            self.checkpoint = str(self.checkpoint)
        if isinstance(self.kmeans, Mapping):
            self.kmeans = build_config(KMeansConfig, self.kmeans, "codec.kmeans")
        if isinstance(self.architecture, Mapping):
            from isdrama.codec.architecture import CodecArchitecture

            self.architecture = CodecArchitecture.from_dict(self.architecture)

    @property
    def spec(self) -> EncodecSpec:
        return MODEL_SPECS[self.model]

    @property
    def effective_normalize(self) -> bool:
        return self.spec.default_normalize if self.normalize is None else bool(self.normalize)

    @property
    def n_q(self) -> int:
        """RVQ codebooks at this bandwidth (EnCodec: log2(codebook_size) bits per codebook per frame)."""
        bits_per_codebook = math.log2(self.spec.codebook_size)
        return max(1, math.floor(self.bandwidth * 1000 / (bits_per_codebook * self.spec.encodec_frame_rate)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # the architecture (a dataclass) becomes a plain dict too

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CodecConfig":
        """Build from a mapping or DictConfig (e.g. ``cfg.codec``); unknown keys fail."""
        return build_config(cls, data, "codec")
