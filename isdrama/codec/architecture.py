"""Codec architectures other than the published EnCodec: widths set in config, a SEANet or Vocos decoder.

A trained codec keeps EnCodec's facts (sample rate, hop 320 = strides 8 x 5 x 4 x 2, 128-d latent,
1024-entry codebooks, the bandwidth -> n_q table), so its tokens have the same layout and time base
as the published model's; only the widths and the decoder differ. ``None`` everywhere means the
published EnCodec architecture (``EncodecModel.encodec_model_24khz``).

The architecture is part of ``CodecConfig`` and is written into every codec checkpoint, so
``codec.checkpoint=PATH`` alone rebuilds the model the file holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from isdrama.codec.config import EncodecSpec
from isdrama.utils.config import build_config

DECODER_KINDS = ("seanet", "vocos")
ENCODER_KINDS = ("seanet", "stft")


@dataclass
class SeanetConfig:
    """Widths of a SEANet encoder or decoder (EnCodec's ``SEANetEncoder`` / ``SEANetDecoder``).

    n_filters: channels of the first (encoder) / last (decoder) convolution, doubled per stride.
    n_residual_layers: residual units per stride.
    lstm: LSTM layers at the 75 Hz bottleneck (0 = none).
    ratios: SEANet's ratios, whose product is the 320-sample hop; the decoder upsamples by them
        in this order and the encoder downsamples in the reverse order, so [2, 4, 5, 8] makes the
        encoder's first stride 8 (the published [8, 5, 4, 2] starts at 2 and spends most of its
        compute at the full sample rate: 0.48 s instead of 0.87 s per fwd+bwd of 16 s at 16 filters).
    """

    n_filters: int
    n_residual_layers: int
    lstm: int
    ratios: list[int]


@dataclass
class StftEncoderConfig:
    """A frame-rate STFT encoder (:class:`isdrama.codec.stft_encoder.StftEncoder`).

    n_fft: STFT size (hop = the codec's 320 samples). dim / intermediate_dim / num_layers: its
    ConvNeXt blocks. log_floor: |X| is floored here before the log.
    """

    n_fft: int
    dim: int
    intermediate_dim: int
    num_layers: int
    log_floor: float


@dataclass
class VocosConfig:
    """A Vocos decoder (``vocos`` package): ConvNeXt blocks at the frame rate and an iSTFT head.

    dim / intermediate_dim / num_layers: the ConvNeXt backbone.
    n_fft: iSTFT size (the hop is the codec's 320 samples; 1280 = Vocos' published EnCodec decoder).
    bandwidth_embeddings: AdaLN embeddings (one per bandwidth) as Vocos' EnCodec model has; null =
        plain LayerNorm. With embeddings, ``bandwidth_id`` picks the one used.
    bandwidth_id: which embedding is used (Vocos' EnCodec model: 0 1 2 3 = 1.5 3 6 12 kbps).
    """

    dim: int
    intermediate_dim: int
    num_layers: int
    n_fft: int
    bandwidth_embeddings: Optional[int] = None
    bandwidth_id: int = 0


@dataclass
class CodecArchitecture:
    """Encoder widths, RVQ depth and the decoder of a trained binaural codec.

    encoder_kind: ``seanet`` (EnCodec's encoder, widths in ``encoder``) or ``stft`` (a frame-rate
        STFT encoder, ``stft_encoder``).
    encoder: SEANet widths of the encoder (null with ``stft``).
    decoder: ``seanet`` or ``vocos``.
    seanet_decoder / vocos: the chosen decoder's settings (the other one is null).
    n_q: RVQ layers built (the bandwidth table needs up to 32 for 24 kbps; a codec trained up to
        6 kbps only needs 8, and asking it for more codebooks fails clearly).
    ema_decay / dead_code_threshold: EnCodec's EMA codebook decay and the EMA cluster size under
        which a code is replaced by a batch vector during training.
    input_scale: the encoder sees the waveform times this, the decoder's output is divided by
        it. Speech at the dataset's level (RMS ~0.01-0.03) through a randomly initialised SEANet
        gives a latent that is 99.8 % the biases' constant (time std / mean |latent| = 0.002; 0.06
        at x30), and such an encoder did not learn (round trip = the same sound in both ears).
    """

    encoder_kind: str
    encoder: Optional[SeanetConfig]
    decoder: str
    n_q: int
    ema_decay: float
    dead_code_threshold: float
    input_scale: float
    seanet_decoder: Optional[SeanetConfig] = None
    vocos: Optional[VocosConfig] = None
    stft_encoder: Optional[StftEncoderConfig] = None

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = build_config(SeanetConfig, self.encoder, "codec.architecture.encoder")
        if isinstance(self.seanet_decoder, Mapping):
            self.seanet_decoder = build_config(SeanetConfig, self.seanet_decoder, "codec.architecture.seanet_decoder")
        if isinstance(self.vocos, Mapping):
            self.vocos = build_config(VocosConfig, self.vocos, "codec.architecture.vocos")
        if isinstance(self.stft_encoder, Mapping):
            self.stft_encoder = build_config(StftEncoderConfig, self.stft_encoder, "codec.architecture.stft_encoder")
        if self.encoder_kind not in ENCODER_KINDS:
            raise ValueError(
                f"codec.architecture.encoder_kind must be one of {ENCODER_KINDS}, got {self.encoder_kind!r}"
            )
        if (self.encoder if self.encoder_kind == "seanet" else self.stft_encoder) is None:
            key = "encoder" if self.encoder_kind == "seanet" else "stft_encoder"
            raise ValueError(f"codec.architecture.encoder_kind={self.encoder_kind} needs codec.architecture.{key}")
        if self.decoder not in DECODER_KINDS:
            raise ValueError(f"codec.architecture.decoder must be one of {DECODER_KINDS}, got {self.decoder!r}")
        chosen = self.vocos if self.decoder == "vocos" else self.seanet_decoder
        if chosen is None:
            key = "vocos" if self.decoder == "vocos" else "seanet_decoder"
            raise ValueError(f"codec.architecture.decoder={self.decoder} needs codec.architecture.{key}")
        if int(self.n_q) < 1:
            raise ValueError(f"codec.architecture.n_q must be >= 1, got {self.n_q}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CodecArchitecture":
        return build_config(cls, data, "codec.architecture")


def build_encodec_model(spec: EncodecSpec, arch: CodecArchitecture):
    """An untrained EncodecModel of ``spec``'s facts with ``arch``'s widths and decoder (the
    global RNG draws the initial weights: seed it first)."""
    from encodec import EncodecModel
    from encodec.modules import SEANetDecoder, SEANetEncoder
    from encodec.quantization import ResidualVectorQuantizer

    if spec.channels != 1 or spec.frames_per_step != 1:
        raise NotImplementedError(f"codec.architecture: only the per-ear 24 kHz layout is trainable, not {spec.name}")
    if arch.encoder_kind == "stft":
        from isdrama.codec.stft_encoder import StftEncoder

        encoder = StftEncoder(spec.dimension, spec.hop_length, arch.stft_encoder)
    else:
        encoder = _seanet(SEANetEncoder, arch.encoder, spec, "encoder")
    if arch.decoder == "vocos":
        from isdrama.codec.vocos_decoder import VocosDecoder

        decoder = VocosDecoder(spec.dimension, spec.hop_length, arch.vocos)
    else:
        decoder = _seanet(SEANetDecoder, arch.seanet_decoder, spec, "decoder")
    quantizer = ResidualVectorQuantizer(
        dimension=spec.dimension,
        n_q=int(arch.n_q),
        bins=spec.codebook_size,
        decay=float(arch.ema_decay),
        threshold_ema_dead_code=float(arch.dead_code_threshold),
    )
    bits = math.log2(spec.codebook_size) * spec.encodec_frame_rate / 1000
    bandwidths = [b for b in spec.bandwidths if math.floor(b / bits + 1e-9) <= arch.n_q]
    return EncodecModel(encoder, decoder, quantizer, bandwidths, spec.sample_rate, spec.channels, name=spec.name)


def _seanet(cls, cfg: SeanetConfig, spec: EncodecSpec, what: str):
    """A SEANet encoder or decoder of ``cfg``'s widths with ``spec``'s channels, latent and causality."""
    net = cls(
        channels=spec.channels,
        dimension=spec.dimension,
        causal=spec.causal,
        norm="weight_norm",
        n_filters=cfg.n_filters,
        n_residual_layers=cfg.n_residual_layers,
        lstm=cfg.lstm,
        ratios=list(cfg.ratios),
    )
    if net.hop_length != spec.hop_length:
        raise ValueError(f"{what} hop {net.hop_length} != {spec.name}'s {spec.hop_length} (codec.architecture ratios)")
    return net
