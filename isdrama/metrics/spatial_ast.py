"""SpatialAST, the BAT spatial-audio encoder, and the ANG Cos / DIS Cos metrics built on it.

A re-implementation that loads the released ``finetuned.pth`` unchanged: a dict whose 'model' key
holds a state_dict with the parameter names and shapes of the public Spatial-AST code
(github zszheng147/Spatial-AST, ``spatial_ast.py``: ``vit_base_patch16`` on their
``vision_transformer.VisionTransformer``); BAT reports mAP 0.497, distance accuracy 67.6 % and
18.0 degrees mean DOA error for that checkpoint.

Model (B files, 2 ears, N = 320000 samples at 32 kHz, D = 768):

- front end (frozen, stored in the checkpoint under torchlibrosa's names):
  ``spectrogram_extractor.conv_real/conv_imag`` (a DFT x periodic Hann as Conv1d, n_fft 1024,
  hop 320, centred, reflect padding) and ``logmel_extractor.melW`` (513 x 128 Slaney mel,
  50-14000 Hz). log-mel = 10 log10(max(|STFT| @ melW, 1e-10)) of the MAGNITUDE per ear;
  ``bn`` = BatchNorm2d(2, affine=False) over the two log-mels; IPD = angle(R) - angle(L);
  cos(IPD) @ melW and sin(IPD) @ melW; stack -> (B, 4, T, 128); bicubic (align_corners) to
  1024 frames when shorter;
- ``conv_downsample`` = conv3x3(4 -> 1, no bias) + BatchNorm2d(1) + GELU -> (B, 1, 1024, 128);
- ``patch_embed.proj`` Conv2d(1, D, 16, stride 16) -> 64 x 8 = 512 patches + ``pos_embed[:, 1:]``
  (fixed 2-D sin-cos, shape (1, 513, D); row 0 unused);
- 3 learned tokens ``cls_tokens`` [distance, DOA, class] prepended (no positional embedding);
- ``blocks``: 12 timm ViT blocks (D, 12 heads, MLP 4, qkv bias, LayerNorm eps 1e-6); timm 1.0's
  Block has the same parameter names as the timm 0.3.2 / local Block the checkpoint was made with
  (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2);
- ``dis_norm`` / ``doa_norm`` / ``fc_norm`` LayerNorms on tokens 0 / 1 / 2; heads
  ``distance_head`` (21 classes: 0-10 m by 0.5 m), ``azimuth_head`` (360 x 1 degree),
  ``elevation_head`` (180 x 1 degree) on the DOA token, ``head`` (355 classes).

Label conventions (from Spatial-AST's data/dataset.py): distance class k = k * 0.5 m; azimuth
class a = round(degrees(atan2(front, right))) mod 360, i.e. 0 = right, 90 = front, 180 = left,
270 = behind (= atan2(y, x) in this project's listener frame, x right, y front); elevation class
e = elevation + 90 (degrees, -90..89).

Preprocessing as published (per file): soundfile read, scipy.signal.resample_poly to 32 kHz, one
gain to -14 dBFS RMS over both channels (a silent file is left as is), zero-pad or crop to 10 s.

Metrics: ANG Cos = cosine between the generated and ground-truth DOA tokens, DIS Cos the same for
the distance tokens, per file, averaged over files. The published script wraps both vectors with
angle(exp(i x)) when any ground-truth value exceeds pi (a heuristic meant for IPD matrices that
fires on LayerNormed tokens too); ``phase_wrap_quirk`` reproduces it and is ON by default in
reference mode, OFF in corrected mode. ``segment_seconds`` gives the paper's per-1-second-segment
variant (the published script does one embedding per file). Besides the cosines, the decoded
positions give readable errors: great-circle angle (degrees) and distance (m).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from isdrama.metrics.audio_prep import (
    load_binaural,
    normalize_dbfs,
    pad_or_crop,
    resample_poly,
    slaney_mel_matrix,
)

__all__ = [
    "SpatialASTConfig",
    "SpatialASTOutput",
    "SpatialAST",
    "CheckpointMismatchError",
    "LoadReport",
    "load_spatial_ast",
    "save_spatial_ast",
    "prepare_waveform",
    "prepare_file",
    "Positions",
    "decode_positions",
    "angular_error_deg",
    "token_cosine",
    "SpatialASTMetricConfig",
    "SpatialASTResult",
    "embed_files",
    "spatial_ast_scores",
]


@dataclass
class SpatialASTConfig:
    """Architecture and preprocessing of SpatialAST (defaults = the released BAT encoder)."""

    embed_dim: int = 768  #: token width D (ViT-B)
    depth: int = 12  #: transformer blocks
    num_heads: int = 12  #: attention heads
    mlp_ratio: float = 4.0  #: MLP hidden = mlp_ratio * D
    norm_eps: float = 1e-6  #: LayerNorm epsilon
    num_tokens: int = 3  #: learned tokens [distance, DOA, class]
    num_classes: int = 355  #: sound-event classes of ``head``
    num_distance_classes: int = 21  #: distance classes (0..10 m)
    distance_step_m: float = 0.5  #: metres per distance class
    num_azimuth_classes: int = 360  #: 1-degree azimuth classes
    num_elevation_classes: int = 180  #: 1-degree elevation classes (class - 90 = degrees)
    patch_size: int = 16  #: square patch side on the (time, mel) image
    target_frames: int = 1024  #: frames the features are interpolated to
    sample_rate: int = 32000  #: model input rate (Hz)
    n_fft: int = 1024  #: STFT size
    hop_length: int = 320  #: STFT hop
    n_mels: int = 128  #: mel bands
    f_min: float = 50.0  #: mel lower edge (Hz)
    f_max: float = 14000.0  #: mel upper edge (Hz)
    amin: float = 1e-10  #: log-mel floor
    clip_seconds: float = 10.0  #: inputs are padded/cropped to this length
    target_dbfs: float = -14.0  #: RMS level of the input after normalisation

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (time, frequency): (64, 8) for the defaults."""
        return self.target_frames // self.patch_size, self.n_mels // self.patch_size


@dataclass
class SpatialASTOutput:
    """Encoder outputs for B inputs: LayerNormed tokens (B, D) and head logits."""

    distance_token: torch.Tensor  #: (B, D) dis_norm(token 0): the "distance embedding"
    doa_token: torch.Tensor  #: (B, D) doa_norm(token 1): the "angle embedding"
    class_token: torch.Tensor  #: (B, D) fc_norm(token 2)
    distance_logits: torch.Tensor  #: (B, 21)
    azimuth_logits: torch.Tensor  #: (B, 360)
    elevation_logits: torch.Tensor  #: (B, 180)
    class_logits: torch.Tensor  #: (B, 355)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (1 + H*W, dim), row 0 zeros (MAE convention), time-major."""
    h, w = grid
    gh, gw = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")  # (H, W)
    emb = np.concatenate([_sincos_1d(dim // 2, gh), _sincos_1d(dim // 2, gw)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros((1, dim)), emb], axis=0)).float()


class _ConvSTFT(nn.Module):
    """torchlibrosa-style STFT as two frozen Conv1d (names match the checkpoint).

    conv_real.weight[k, 0, n] = cos(2 pi k n / N) w[n], conv_imag.weight = -sin(...) w[n].
    (B, N) -> real, imag (B, T, F) with centred reflect padding.
    """

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        n_freq = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, n_freq, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, n_freq, n_fft, stride=hop_length, bias=False)
        n = np.arange(n_fft)
        k = np.arange(n_freq)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann (librosa fftbins=True)
        arg = 2 * np.pi * ((np.outer(k, n) % n_fft) / n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.cos(arg) * window)[:, None])
            self.conv_imag.weight.copy_(torch.from_numpy(-np.sin(arg) * window)[:, None])
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.n_fft // 2
        x = F.pad(x[:, None, :], (half, half), mode="reflect")
        real = self.conv_real(x).transpose(1, 2)
        imag = self.conv_imag(x).transpose(1, 2)
        return real, imag


class _LogMel(nn.Module):
    """Holds the frozen mel matrix ``melW`` (F, M) under torchlibrosa's name."""

    def __init__(self, cfg: SpatialASTConfig):
        super().__init__()
        mel = slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.melW = nn.Parameter(mel, requires_grad=False)
        self.amin = cfg.amin

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(..., F) magnitude -> (..., M) 10 log10(max(magnitude @ melW, amin))."""
        return 10.0 * torch.log10(torch.clamp(magnitude @ self.melW, min=self.amin))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: SpatialASTConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, M) -> (B, T/16 * M/16, D), time-major patch order."""
        return rearrange(self.proj(x), "b d h w -> b (h w) d")


class SpatialAST(nn.Module):
    """The BAT encoder with the released checkpoint's parameter names. Always used in eval mode."""

    def __init__(self, cfg: Optional[SpatialASTConfig] = None):
        super().__init__()
        cfg = cfg or SpatialASTConfig()
        self.cfg = cfg
        d = cfg.embed_dim
        from timm.models import vision_transformer as vit  # timm, torchvision: only when a model is built

        norm = partial(nn.LayerNorm, eps=cfg.norm_eps)
        self.spectrogram_extractor = _ConvSTFT(cfg.n_fft, cfg.hop_length)
        self.logmel_extractor = _LogMel(cfg)
        self.bn = nn.BatchNorm2d(2, affine=False)
        self.conv_downsample = nn.Sequential(
            nn.Conv2d(4, 1, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(1), nn.GELU()
        )
        self.patch_embed = _PatchEmbed(cfg)
        h, w = cfg.grid
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(d, (h, w))[None], requires_grad=False)
        self.cls_tokens = nn.Parameter(torch.randn(1, cfg.num_tokens, d) * 0.02)
        self.blocks = nn.ModuleList(
            [vit.Block(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(cfg.depth)]
        )
        self.dis_norm = norm(d)
        self.doa_norm = norm(d)
        self.fc_norm = norm(d)
        self.head = nn.Linear(d, cfg.num_classes)
        self.distance_head = nn.Linear(d, cfg.num_distance_classes)
        self.azimuth_head = nn.Linear(d, cfg.num_azimuth_classes)
        self.elevation_head = nn.Linear(d, cfg.num_elevation_classes)
        self.eval()

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) at 32 kHz -> (B, 4, 1024, 128): BN'd log-mel L/R, cos/sin IPD @ melW."""
        B = wav.shape[0]
        real, imag = self.spectrogram_extractor(rearrange(wav, "b c n -> (b c) n"))  # (2B, T, F)
        mag = torch.sqrt(real**2 + imag**2)
        log_mel = rearrange(self.logmel_extractor(mag), "(b c) t m -> b c t m", b=B)
        log_mel = self.bn(log_mel)
        real = rearrange(real, "(b c) t f -> b c t f", b=B)
        imag = rearrange(imag, "(b c) t f -> b c t f", b=B)
        ipd = torch.atan2(imag[:, 1], real[:, 1]) - torch.atan2(imag[:, 0], real[:, 0])  # (B, T, F)
        melw = self.logmel_extractor.melW
        x = torch.cat([log_mel, torch.stack([torch.cos(ipd), torch.sin(ipd)], dim=1) @ melw], dim=1)
        if x.shape[2] < self.cfg.target_frames:
            x = F.interpolate(x, (self.cfg.target_frames, x.shape[3]), mode="bicubic", align_corners=True)
        return x

    def forward(self, wav: torch.Tensor) -> SpatialASTOutput:
        """(B, 2, N) binaural at 32 kHz (channel 0 = left), prepared -> SpatialASTOutput."""
        if wav.ndim != 3 or wav.shape[1] != 2:
            raise ValueError(f"SpatialAST expects (B, 2, N) binaural input, got {tuple(wav.shape)}")
        x = self.conv_downsample(self.features(wav))
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        x = torch.cat([self.cls_tokens.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        dis = self.dis_norm(x[:, 0])
        doa = self.doa_norm(x[:, 1])
        cls = self.fc_norm(x[:, 2])
        return SpatialASTOutput(
            dis, doa, cls, self.distance_head(dis), self.azimuth_head(doa), self.elevation_head(doa), self.head(cls)
        )


# ----------------------------------------------------------------------------------------------
# checkpoints


class CheckpointMismatchError(ValueError):
    """The checkpoint's encoder parameters do not match SpatialAST; the message lists them."""


#: parameters that must be in a checkpoint, with matching shapes, for embeddings to mean anything
_ENCODER_PREFIXES = (
    "conv_downsample.",
    "bn.",
    "patch_embed.",
    "cls_tokens",
    "pos_embed",
    "blocks.",
    "dis_norm.",
    "doa_norm.",
)
#: deterministic front-end constants: recomputed when absent
_FRONTEND_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")
#: heads: needed only to decode positions
_HEAD_PREFIXES = ("distance_head.", "azimuth_head.", "elevation_head.", "head.", "fc_norm.")


def _group(key: str) -> str:
    if key.endswith("num_batches_tracked"):
        return "bookkeeping"
    for group, prefixes in (
        ("encoder", _ENCODER_PREFIXES),
        ("frontend", _FRONTEND_PREFIXES),
        ("heads", _HEAD_PREFIXES),
    ):
        if key.startswith(prefixes):
            return group
    return "other"


@dataclass
class LoadReport:
    """What loading a checkpoint found. Keys are state_dict names."""

    path: str
    missing: list[str] = field(default_factory=list)  #: model keys absent from the file (non-encoder)
    unexpected: list[str] = field(default_factory=list)  #: file keys the model does not have (ignored)
    heads_loaded: bool = True  #: all head parameters present (positions can be decoded)

    def __str__(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8})" if len(keys) > 8 else "")

        return (
            f"{self.path}: {len(self.missing)} missing non-encoder key(s)"
            + (f" [{short(self.missing)}]" if self.missing else "")
            + f", {len(self.unexpected)} unexpected key(s) ignored"
            + (f" [{short(self.unexpected)}]" if self.unexpected else "")
        )


def _read_checkpoint(path: Path, allow_pickle: bool) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # released files may carry an argparse Namespace of training args
        first = exc
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        pass
    if allow_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    raise CheckpointMismatchError(
        f"{path}: cannot be read as a weights-only checkpoint ({first}); if you trust the file, pass allow_pickle=True"
    )


def _state_dict_of(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj  # a bare state_dict
    else:
        keys = list(obj.keys())[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointMismatchError(
            f"{path}: expected a dict with a 'model' state_dict (released SpatialAST format), found {keys}"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_spatial_ast(
    path: Path | str,
    device: torch.device | str = "cpu",
    cfg: Optional[SpatialASTConfig] = None,
    allow_pickle: bool = False,
    verbose: bool = True,
) -> tuple[SpatialAST, LoadReport]:
    """Load the released SpatialAST checkpoint (``{'model': state_dict}``) into SpatialAST.

    Refuses (CheckpointMismatchError listing the keys) a file whose encoder parameters are
    missing or of another shape, or any present parameter with a wrong shape. Missing front-end
    constants (recomputed), heads (then positions cannot be decoded) and unexpected keys (e.g.
    unused extra blocks) are reported, not fatal. Returns (model in eval mode on ``device``, report).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SpatialAST checkpoint not found")
    sd = _state_dict_of(_read_checkpoint(path, allow_pickle), path)
    model = SpatialAST(cfg)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    bad_shape = sorted(
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    )
    missing_encoder = [k for k in missing if _group(k) == "encoder"]
    if missing_encoder or bad_shape:
        raise CheckpointMismatchError(
            f"{path}: not a SpatialAST checkpoint of this configuration: "
            + (f"missing encoder key(s) {missing_encoder}" if missing_encoder else "")
            + ("; " if missing_encoder and bad_shape else "")
            + (f"shape mismatch {bad_shape}" if bad_shape else "")
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    report = LoadReport(
        str(path),
        missing=[k for k in missing if _group(k) != "bookkeeping"],
        unexpected=unexpected,
        heads_loaded=not any(_group(k) == "heads" for k in missing),
    )
    if verbose and (report.missing or report.unexpected):
        warnings.warn(str(report), stacklevel=2)
    return model.to(device).eval(), report


def save_spatial_ast(model: SpatialAST, path: Path | str) -> None:
    """Write ``{'model': state_dict}`` (the released format) atomically."""
    from isdrama.utils.io import atomic_path

    with atomic_path(path, suffix=".pth") as tmp:
        torch.save({"model": model.state_dict()}, tmp)


# ----------------------------------------------------------------------------------------------
# preprocessing


def prepare_waveform(
    wav: np.ndarray, sample_rate: int, cfg: Optional[SpatialASTConfig] = None, crop: bool = True
) -> np.ndarray:
    """Published preprocessing of one (2, N) float array -> (2, clip_samples) float32.

    scipy.signal.resample_poly to 32 kHz (float64), one gain to -14 dBFS RMS over both channels,
    zero-pad/crop to 10 s (``crop=False`` keeps the real length, for segments).
    """
    cfg = cfg or SpatialASTConfig()
    x = resample_poly(np.asarray(wav, dtype=np.float64), sample_rate, cfg.sample_rate, axis=-1)
    x = normalize_dbfs(x, cfg.target_dbfs)
    if crop:
        x = pad_or_crop(x, cfg.clip_samples)
    return x.astype(np.float32)


def prepare_file(path: Path | str, cfg: Optional[SpatialASTConfig] = None, crop: bool = True) -> np.ndarray:
    """Read (soundfile) and prepare one binaural file; errors name the file."""
    cfg = cfg or SpatialASTConfig()
    wav, sr = load_binaural(path)
    return prepare_waveform(wav, sr, cfg, crop=crop)


# ----------------------------------------------------------------------------------------------
# decoding and comparisons


@dataclass
class Positions:
    """Decoded source positions, each (B,): degrees and metres (Spatial-AST label conventions)."""

    azimuth_deg: torch.Tensor  #: 0 = right, 90 = front, 180 = left, 270 = behind
    elevation_deg: torch.Tensor  #: -90 (below) .. 89 (above)
    distance_m: torch.Tensor  #: 0 .. 10 m


def decode_positions(out: SpatialASTOutput, cfg: Optional[SpatialASTConfig] = None) -> Positions:
    """Arg-max decoding of the heads into azimuth/elevation (degrees) and distance (metres)."""
    cfg = cfg or SpatialASTConfig()
    az = out.azimuth_logits.argmax(-1).float() * (360.0 / cfg.num_azimuth_classes)
    el = out.elevation_logits.argmax(-1).float() * (180.0 / cfg.num_elevation_classes) - 90.0
    dist = out.distance_logits.argmax(-1).float() * cfg.distance_step_m
    return Positions(az, el, dist)


def angular_error_deg(az_a: torch.Tensor, el_a: torch.Tensor, az_b: torch.Tensor, el_b: torch.Tensor) -> torch.Tensor:
    """Great-circle angle (degrees) between directions given in degrees; any broadcastable shapes."""

    def unit(az, el):
        az, el = torch.deg2rad(az.double()), torch.deg2rad(el.double())
        return torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=-1)

    u, v = unit(az_a, el_a), unit(az_b, el_b)
    return torch.rad2deg(torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(-1))).float()


def token_cosine(gt: np.ndarray, gen: np.ndarray, phase_wrap_quirk: bool, eps: float = 1e-8) -> float:
    """Cosine of two flattened embeddings as the published script computes it.

    Arrays of any shape are cropped to the common top-left block first; with the quirk on, both
    are wrapped to (-pi, pi] by angle(exp(i x)) when any ground-truth value exceeds pi; each vector
    is divided by (norm + eps).
    """
    a, b = np.asarray(gt, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    if a.ndim != b.ndim:
        raise ValueError(f"token_cosine: arrays of {a.ndim} and {b.ndim} dimensions")
    crop = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, b.shape))
    a, b = a[crop].ravel(), b[crop].ravel()
    if phase_wrap_quirk and np.any(a > np.pi):
        a = np.angle(np.exp(1j * a))
        b = np.angle(np.exp(1j * b))
    return float(np.dot(a / (np.linalg.norm(a) + eps), b / (np.linalg.norm(b) + eps)))


# ----------------------------------------------------------------------------------------------
# file-level API

Mode = Literal["reference", "corrected"]


@dataclass
class SpatialASTMetricConfig:
    """How ANG Cos / DIS Cos and the position errors are computed."""

    mode: Mode = "corrected"  #: "reference" (published) or "corrected"
    #: wrap both tokens when any gt value > pi (published heuristic); None = on in reference mode only
    phase_wrap_quirk: Optional[bool] = None
    #: None: one embedding per file (published script); e.g. 1.0: the paper's per-second segments
    segment_seconds: Optional[float] = None
    batch_size: int = 8  #: inputs per forward pass
    device: str = "cpu"  #: torch device

    def __post_init__(self) -> None:
        if self.mode not in ("reference", "corrected"):
            raise ValueError(f"SpatialASTMetricConfig.mode: expected 'reference' or 'corrected', got {self.mode!r}")
        if self.segment_seconds is not None and self.segment_seconds <= 0:
            raise ValueError(f"SpatialASTMetricConfig.segment_seconds: expected > 0, got {self.segment_seconds}")

    @property
    def wrap(self) -> bool:
        return self.mode == "reference" if self.phase_wrap_quirk is None else bool(self.phase_wrap_quirk)


@dataclass
class FileEmbeddings:
    """Per-file tokens and decoded positions; with segments, one row per segment."""

    names: list[str]
    distance: list[np.ndarray]  #: per file (S, D), S = 1 without segments
    doa: list[np.ndarray]  #: per file (S, D)
    azimuth_deg: list[np.ndarray]  #: per file (S,)
    elevation_deg: list[np.ndarray]  #: per file (S,)
    distance_m: list[np.ndarray]  #: per file (S,)


def _segments(x: np.ndarray, cfg: SpatialASTConfig, seconds: float) -> list[np.ndarray]:
    """(2, N) prepared (uncropped) audio -> 1-s (2, n) segments of the first clip_seconds."""
    n = int(round(seconds * cfg.sample_rate))
    usable = min(x.shape[-1], cfg.clip_samples)
    count = max(1, usable // n)
    return [pad_or_crop(x[:, i * n : (i + 1) * n], n) for i in range(count)]


@torch.no_grad()
def embed_files(
    model: SpatialAST,
    paths: Sequence[Path | str],
    batch_size: int = 8,
    segment_seconds: Optional[float] = None,
    progress: bool = False,
) -> FileEmbeddings:
    """Tokens + decoded positions of binaural files (published preprocessing), batched."""
    cfg = model.cfg
    device = next(model.parameters()).device
    items: list[tuple[int, np.ndarray]] = []
    for i, p in enumerate(paths):
        if segment_seconds is None:
            items.append((i, prepare_file(p, cfg)))
        else:
            items.extend((i, s) for s in _segments(prepare_file(p, cfg, crop=False), cfg, segment_seconds))
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in ("dis", "doa", "az", "el", "dm")}
    batches = range(0, len(items), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="SpatialAST", unit="batch")
    for s in batches:
        x = torch.from_numpy(np.stack([it[1] for it in items[s : s + batch_size]])).to(device)
        out = model(x)
        pos = decode_positions(out, cfg)
        for k, v in (
            ("dis", out.distance_token),
            ("doa", out.doa_token),
            ("az", pos.azimuth_deg),
            ("el", pos.elevation_deg),
            ("dm", pos.distance_m),
        ):
            outs[k].append(v.float().cpu())
    cat = {k: torch.cat(v).numpy() for k, v in outs.items()}
    owner = np.array([it[0] for it in items])
    rows = [np.nonzero(owner == i)[0] for i in range(len(paths))]
    return FileEmbeddings(
        [Path(p).stem for p in paths], *([cat[k][r] for r in rows] for k in ("dis", "doa", "az", "el", "dm"))
    )


@dataclass
class SpatialASTResult:
    """Per-file scores (N,) and their means."""

    names: list[str]
    ang_cos: np.ndarray  #: cosine of DOA tokens (segment mean with segments)
    dis_cos: np.ndarray  #: cosine of distance tokens
    angle_error_deg: np.ndarray  #: great-circle error between decoded gt and generated directions
    distance_error_m: np.ndarray  #: |decoded gt distance - decoded generated distance|
    gt: FileEmbeddings
    gen: FileEmbeddings

    def summary(self) -> dict:
        return {
            "n_files": len(self.names),
            "ang_cos": float(np.mean(self.ang_cos)),
            "dis_cos": float(np.mean(self.dis_cos)),
            "angle_error_deg": float(np.mean(self.angle_error_deg)),
            "distance_error_m": float(np.mean(self.distance_error_m)),
        }


def spatial_ast_scores(
    model: SpatialAST,
    gt_paths: Sequence[Path | str],
    gen_paths: Sequence[Path | str],
    cfg: Optional[SpatialASTMetricConfig] = None,
    report: Optional[LoadReport] = None,
    progress: bool = False,
) -> SpatialASTResult:
    """ANG Cos, DIS Cos, angle error and distance error of paired files (gt_paths[i] vs gen_paths[i])."""
    cfg = cfg or SpatialASTMetricConfig()
    if len(gt_paths) != len(gen_paths):
        raise ValueError(f"spatial_ast_scores: {len(gt_paths)} ground-truth vs {len(gen_paths)} generated files")
    if not gt_paths:
        raise ValueError("spatial_ast_scores: no files to compare")
    model = model.to(cfg.device).eval()
    gt = embed_files(model, gt_paths, cfg.batch_size, cfg.segment_seconds, progress)
    gen = embed_files(model, gen_paths, cfg.batch_size, cfg.segment_seconds, progress)
    heads = report is None or report.heads_loaded
    ang, dis, aerr, derr = [], [], [], []
    for i in range(len(gt_paths)):
        s = min(len(gt.doa[i]), len(gen.doa[i]))  # segments paired in order
        if cfg.segment_seconds is None:  # published: one (1, D) array per file
            ang.append(token_cosine(gt.doa[i], gen.doa[i], cfg.wrap))
            dis.append(token_cosine(gt.distance[i], gen.distance[i], cfg.wrap))
        else:
            ang.append(float(np.mean([token_cosine(gt.doa[i][j], gen.doa[i][j], cfg.wrap) for j in range(s)])))
            dis.append(
                float(np.mean([token_cosine(gt.distance[i][j], gen.distance[i][j], cfg.wrap) for j in range(s)]))
            )
        if heads:
            e = angular_error_deg(
                torch.from_numpy(gt.azimuth_deg[i][:s]),
                torch.from_numpy(gt.elevation_deg[i][:s]),
                torch.from_numpy(gen.azimuth_deg[i][:s]),
                torch.from_numpy(gen.elevation_deg[i][:s]),
            )
            aerr.append(float(e.mean()))
            derr.append(float(np.mean(np.abs(gt.distance_m[i][:s] - gen.distance_m[i][:s]))))
        else:
            aerr.append(float("nan"))
            derr.append(float("nan"))
    return SpatialASTResult(gt.names, np.array(ang), np.array(dis), np.array(aerr), np.array(derr), gt, gen)
