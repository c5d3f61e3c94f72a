"""The binaural EnCodec wrapper: waveform <-> tokens <-> latents (docs/architecture.md).

Shapes (B batch, S samples at the codec rate, T model frames at 75 frames/s):

- waveform ``(B, 2, S)``, channel 0 = left ear, 1 = right ear;
- tokens ``(B, 2, n_q, T)`` long, codebook indices in [0, codebook_size);
- latent ``(B, 2 * D, T)`` float, D = 128; the sum of the RVQ code vectors (or the continuous
  encoder output), the two halves of the channel axis side by side.

Token layout per model:

- ``encodec_24khz`` (default): the 24 kHz mono model runs on each ear separately; axis 1 of the
  tokens is the ear (0 = left, 1 = right); latent channels ``[0:D]`` = left, ``[D:2D]`` = right.
  One model frame = 320 samples at 24 kHz.
- ``encodec_48khz``: the 48 kHz stereo model encodes both ears jointly at 150 frames/s. Two
  consecutive EnCodec frames are packed into one 75 Hz model frame: axis 1 of the tokens is the
  *sub-frame* (0 = even EnCodec frame 2t, 1 = odd frame 2t + 1), NOT the ear; latent channels
  ``[0:D]`` = frame 2t, ``[D:2D]`` = frame 2t + 1. One model frame = 640 samples at 48 kHz.
  Clips are encoded whole (no 1 s segmentation) and, by default, scaled to unit RMS as EnCodec
  does; that scale is not part of the tokens, so ``decode`` returns unit-RMS audio.

Both layouts give the same model time base (75 frames/s) and a 256-d latent frame.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from einops import rearrange
from torch import nn

from isdrama.codec.config import CodecConfig
from isdrama.codec.weights import build_encodec, checkpoint_architecture, load_weights, save_codec_state

#: Bump when anything outside the weights that changes tokens changes (packing, padding,
#: normalisation or the resampler in ``prepare_audio``, the nearest-code search); it is part of
#: ``config_key``. 2: nearest codes in float64 (``quantize``).
TOKEN_FORMAT_VERSION = 2


def canonical_codes(embed: torch.Tensor) -> torch.Tensor:
    """(K,) for each code of a codebook ``embed`` (K, D), the lowest index of an identical code;
    kept per codebook tensor until it changes (its in-place version counter: codec training's EMA
    updates), so generation does not redo the (K, D) unique search for every line."""
    # (storage, in-place version): a copy (deepcopy, EMA) or an update misses; inference tensors keep no version
    version = None if embed.is_inference() else (embed.data_ptr(), embed._version)
    cached = getattr(embed, "_isdrama_canonical", None)  # kept on the tensor: it goes with it
    if cached is not None and version is not None and cached[0] == version:
        return cached[1]
    with torch.inference_mode(False), torch.no_grad():
        _, group = torch.unique(embed.double(), dim=0, return_inverse=True)
        K = embed.shape[0]
        first = torch.full((int(group.max()) + 1,), K, dtype=torch.long, device=embed.device)
        first = first.scatter_reduce(0, group, torch.arange(K, device=embed.device), "amin")
        canonical = first[group]
    if version is not None:
        embed._isdrama_canonical = (version, canonical)
    return canonical


def nearest_codes(layers, emb: torch.Tensor) -> torch.Tensor:
    """Residual nearest-code search of EnCodec RVQ ``layers`` in float64: emb (N, D, T) -> codes
    (len(layers), N, T) long; identical codes count as one, the lowest index (see
    :meth:`BinauralCodec.quantize`; the codec stage's validation round trip uses it too)."""
    n, t = emb.shape[0], emb.shape[2]
    codes = []
    residual = rearrange(emb, "n d t -> (n t) d").double()
    for layer in layers:
        if not isinstance(layer.project_in, nn.Identity):
            raise NotImplementedError("quantize: codebooks with an input projection")
        book = layer._codebook.embed.double()  # (K, D)
        canonical = canonical_codes(layer._codebook.embed)
        dist = book.pow(2).sum(1) - 2.0 * residual @ book.T  # + |x|^2, the same for every code
        idx = canonical[dist.argmin(1)]
        codes.append(idx)
        residual = residual - book[idx]
    return rearrange(torch.stack(codes), "q (n t) -> q n t", n=n, t=t)


def adopt_checkpoint_architecture(config: CodecConfig) -> CodecConfig:
    """``config`` with the architecture its checkpoint was saved with (a trained codec's file
    carries it, so ``codec.checkpoint=PATH`` alone is enough). A different architecture in the
    config itself is an error naming both."""
    if config.checkpoint is None:
        return config
    saved = checkpoint_architecture(config.checkpoint)
    if saved is None:
        return config
    mine = None if config.architecture is None else config.architecture.to_dict()
    if mine is not None and mine != saved:
        raise ValueError(
            f"{config.checkpoint}: the checkpoint holds codec architecture {saved}, but codec.architecture is {mine}"
        )
    return CodecConfig.from_dict({**config.to_dict(), "architecture": saved})


class BinauralCodec(nn.Module):
    """Binaural EnCodec: ``encode``, ``quantize``, ``tokens_to_latent``, ``decode``.

    The codec is frozen: every method runs without gradients, the EnCodec model stays in eval mode.
    """

    def __init__(self, config: Optional[CodecConfig] = None, **overrides):
        super().__init__()
        if config is None:
            config = CodecConfig(**overrides)
        elif overrides:
            config = CodecConfig.from_dict({**config.to_dict(), **overrides})
        config = adopt_checkpoint_architecture(config)
        self.config = config
        self.spec = config.spec
        self.model = build_encodec(self.spec, config.seed, config.architecture)
        if config.n_q > len(self.model.quantizer.vq.layers):
            raise ValueError(
                f"codec.bandwidth {config.bandwidth:g} kbps needs {config.n_q} codebooks but this codec has "
                f"{len(self.model.quantizer.vq.layers)} (codec.architecture.n_q); choose a lower bandwidth"
            )
        self.weights_source = load_weights(self.model, config)
        self.model.set_target_bandwidth(config.bandwidth)
        if (
            self.model.quantizer.get_num_quantizers_for_bandwidth(self.spec.encodec_frame_rate, config.bandwidth)
            != config.n_q
        ):
            raise RuntimeError(f"n_q mismatch between CodecConfig and EnCodec for {config.bandwidth} kbps")
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    # ----------------------------------------------------------------------------- properties
    @property
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the waveforms ``encode`` takes and ``decode`` returns."""
        return self.spec.sample_rate

    @property
    def hop_length(self) -> int:
        """Samples (at ``sample_rate``) per model frame."""
        return self.spec.hop_length * self.spec.frames_per_step

    @property
    def frame_rate(self) -> float:
        """Model frames per second (75 for both models)."""
        return self.sample_rate / self.hop_length

    @property
    def causal(self) -> bool:
        """Zero padding at the end leaves earlier tokens unchanged (so lines of other lengths may
        be encoded in one padded batch): the published models' fact, and a trained codec's SEANet
        encoder (causal convolutions); the STFT encoder's centred frames and ConvNeXt blocks see
        the future."""
        arch = self.config.architecture
        return self.spec.causal and (arch is None or arch.encoder_kind == "seanet")

    @property
    def input_scale(self) -> float:
        """The encoder sees the waveform times this and the decoder's output is divided by it
        (a trained codec's ``architecture.input_scale``; 1 for the published models)."""
        arch = self.config.architecture
        return 1.0 if arch is None else float(arch.input_scale)

    @property
    def n_q(self) -> int:
        """RVQ codebooks per (ear or sub-)frame at the configured bandwidth."""
        return self.config.n_q

    @property
    def codebook_size(self) -> int:
        return self.spec.codebook_size

    @property
    def latent_dim(self) -> int:
        """Channels of a binaural latent frame (2 x 128 = 256)."""
        return 2 * self.spec.dimension

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_random_weights(self) -> bool:
        """True when neither pretrained weights nor a checkpoint were loaded."""
        return self.weights_source.startswith("random")

    @property
    def uninitialised_layers(self) -> list[int]:
        """Indices of the RVQ layers in use (first n_q) whose codebooks were never initialised.

        Such layers have all-zero codebooks, so they emit token 0 for every frame.
        """
        layers = self.model.quantizer.vq.layers[: self.n_q]
        return [i for i, layer in enumerate(layers) if not bool(layer._codebook.inited.item())]

    def num_frames(self, n_samples: int) -> int:
        """Model frames for ``n_samples`` at the codec rate: ceil(n_samples / hop_length)."""
        return max(1, math.ceil(n_samples / self.hop_length))

    # ----------------------------------------------------------------------------- layout helpers
    def _check_wav(self, wav: torch.Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != 2:
            raise ValueError(f"expected a binaural waveform (B, 2, S), got shape {tuple(wav.shape)}")
        if wav.shape[-1] < 1:
            raise ValueError("waveform has 0 samples")

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 4 or tokens.shape[1] != 2 or not 1 <= tokens.shape[2] <= len(self.model.quantizer.vq.layers):
            raise ValueError(
                f"expected tokens (B, 2, n_q, T) with n_q <= "
                f"{len(self.model.quantizer.vq.layers)}, got shape {tuple(tokens.shape)}"
            )
        if tokens.dtype.is_floating_point:
            raise ValueError(f"tokens must be integers, got {tokens.dtype}")

    def _check_latent(self, latent: torch.Tensor) -> None:
        if latent.dim() != 3 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"expected a latent (B, {self.latent_dim}, T), got shape {tuple(latent.shape)}")

    def _to_encodec_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 2D, T) -> EnCodec's (N, D, T'): per-ear batch (24 kHz) or unpacked frames (48 kHz)."""
        if self.spec.frames_per_step == 1:
            return rearrange(latent, "b (e d) t -> (b e) d t", e=2)
        return rearrange(latent, "b (p d) t -> b d (t p)", p=self.spec.frames_per_step)

    def _from_encodec_latent(self, emb: torch.Tensor, batch: int) -> torch.Tensor:
        """EnCodec's (N, D, T') -> (B, 2D, T)."""
        if self.spec.frames_per_step == 1:
            return rearrange(emb, "(b e) d t -> b (e d) t", b=batch, e=2)
        return rearrange(emb, "b d (t p) -> b (p d) t", p=self.spec.frames_per_step)

    def _from_encodec_codes(self, codes: torch.Tensor, batch: int) -> torch.Tensor:
        """EnCodec's codes (n_q, N, T') -> tokens (B, 2, n_q, T)."""
        if self.spec.frames_per_step == 1:
            return rearrange(codes, "q (b e) t -> b e q t", b=batch, e=2)
        return rearrange(codes, "q b (t p) -> b p q t", p=self.spec.frames_per_step)

    def _to_encodec_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 2, n_q, T) -> EnCodec's codes (n_q, N, T')."""
        if self.spec.frames_per_step == 1:
            return rearrange(tokens, "b e q t -> q (b e) t")
        return rearrange(tokens, "b p q t -> q b (t p)")

    # ----------------------------------------------------------------------------- codec
    def prepare_audio(self, wav: Union[torch.Tensor, np.ndarray], sample_rate: int) -> torch.Tensor:
        """Binaural audio (2, S) or (B, 2, S) at ``sample_rate`` -> (B, 2, S') float32 at the codec
        rate on the codec's device (torchaudio's windowed-sinc resampler at its defaults)."""
        wav = torch.as_tensor(wav, dtype=torch.float32, device=self.device)
        if wav.dim() == 2:
            wav = wav.unsqueeze(0)
        self._check_wav(wav)
        if sample_rate != self.sample_rate:
            wav = AF.resample(wav, int(sample_rate), self.sample_rate)
        return wav

    @torch.no_grad()
    def encoder_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latent: wav (B, 2, S) at ``sample_rate`` -> (B, 2D, T),
        T = ceil(S / hop_length) (the waveform is zero-padded at the end to whole frames)."""
        self._check_wav(wav)
        batch, _, length = wav.shape
        wav = F.pad(wav.to(self.device, torch.float32), (0, self.num_frames(length) * self.hop_length - length))
        if self.config.effective_normalize:
            rms = rearrange(wav.mean(dim=1), "b s -> b 1 s").pow(2).mean(dim=-1, keepdim=True).sqrt()
            wav = wav / (rms + 1e-8)
        if self.spec.channels == 1:
            wav = rearrange(wav, "b e s -> (b e) 1 s")
        emb = self.model.encoder(wav * self.input_scale)
        return self._from_encodec_latent(emb, batch)

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest-code residual quantisation: latent (B, 2D, T) -> tokens (B, 2, n_q, T) long.

        EnCodec's RVQ (each layer takes the code nearest to what the layers before left), with the
        distances and residuals in float64. EnCodec's float32 |x|^2 - 2 x.c + |c|^2 cancels when
        the latents share a large common part (a randomly initialised encoder puts every frame
        within ~1 % of one vector, with codes ~0.5 % apart): its choice then follows the rounding,
        which changes with the batch, the thread split and the CPU's kernels (1 % of the tokens
        moved under a 1e-7 relative change of the latent; none in float64). Identical codes count
        as one, the lowest index.
        """
        self._check_latent(latent)
        emb = self._to_encodec_latent(latent.to(self.device, torch.float32))  # (N, D, T')
        codes = nearest_codes(self.model.quantizer.vq.layers[: self.n_q], emb)
        return self._from_encodec_codes(codes, latent.shape[0])

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, 2, S) at ``sample_rate`` -> tokens (B, 2, n_q, T) long."""
        return self.quantize(self.encoder_latent(wav))

    @torch.no_grad()
    def tokens_to_latent(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 2, q, T), q <= available codebooks -> latent (B, 2D, T): the sum of the code
        vectors of the first q RVQ layers (fewer codebooks = a coarser latent)."""
        self._check_tokens(tokens)
        codes = self._to_encodec_codes(tokens.to(self.device, torch.long))
        emb = self.model.quantizer.vq.decode(codes)
        return self._from_encodec_latent(emb, tokens.shape[0])

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, 2D, T) -> wav (B, 2, T * hop_length) at ``sample_rate``."""
        self._check_latent(latent)
        batch = latent.shape[0]
        wav = self.model.decoder(self._to_encodec_latent(latent.to(self.device, torch.float32))) / self.input_scale
        if self.spec.channels == 1:
            wav = rearrange(wav, "(b e) 1 s -> b e s", b=batch, e=2)
        return wav

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 2, q, T) -> wav (B, 2, T * hop_length) at ``sample_rate``."""
        return self.decode_latent(self.tokens_to_latent(tokens))

    # ----------------------------------------------------------------------------- identity
    def weights_digest(self) -> str:
        """sha1 over the state dict (names, dtypes, shapes, bytes): the identity of the weights."""
        h = hashlib.sha1()
        for name, tensor in sorted(self.model.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def config_key(self, length: int = 12) -> str:
        """Short stable hash of everything that changes tokens: model, bandwidth (n_q),
        normalisation, token format version and the weights (:meth:`weights_digest`)."""
        identity = {
            "model": self.spec.name,
            "bandwidth": self.config.bandwidth,
            "n_q": self.n_q,
            "normalize": self.config.effective_normalize,
            "token_format": TOKEN_FORMAT_VERSION,
            "weights": self.weights_digest(),
        }
        if self.config.architecture is not None:  # e.g. a Vocos bandwidth embedding choice
            identity["architecture"] = self.config.architecture.to_dict()
        return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:length]

    def describe(self) -> dict:
        """Human-readable summary (written next to cached tokens)."""
        return {
            "config_key": self.config_key(),
            "config": self.config.to_dict(),
            "weights_source": self.weights_source,
            "weights_sha1": self.weights_digest(),
            "uninitialised_layers": self.uninitialised_layers,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "hop_length": self.hop_length,
            "n_q": self.n_q,
            "codebook_size": self.codebook_size,
            "latent_dim": self.latent_dim,
            "token_format": TOKEN_FORMAT_VERSION,
            "token_layout": (
                "(2 ears, n_q, T) int16, axis 0: 0 = left, 1 = right"
                if self.spec.frames_per_step == 1
                else "(2 sub-frames, n_q, T) int16, axis 0: EnCodec frame 2t / 2t+1 (stereo model)"
            ),
        }

    def save(self, path: Path | str, extra: Optional[dict] = None) -> Path:
        """Write this codec's config and weights atomically; reload with ``BinauralCodec.load(path)``."""
        return save_codec_state(path, self.config, self.model, extra)

    @classmethod
    def load(cls, path: Path | str, **overrides) -> "BinauralCodec":
        """A codec from a file written by :meth:`save` (its config, its weights)."""
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or "config" not in obj:
            raise ValueError(f"{path}: not an isdrama codec checkpoint (no 'config' key)")
        data = {**obj["config"], **overrides, "checkpoint": str(path)}
        return cls(CodecConfig.from_dict(data))

    def __repr__(self) -> str:  # the nested EnCodec modules would print hundreds of lines
        return (
            f"BinauralCodec(model={self.spec.name}, bandwidth={self.config.bandwidth:g} kbps, n_q={self.n_q}, "
            f"frame_rate={self.frame_rate:g}, weights={self.weights_source})"
        )
