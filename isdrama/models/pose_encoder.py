"""Multimodal Pose Encoder (MPE): geometric, video and text branches to one frame-level z_p.

- ``geo``: per-frame pose features (:mod:`isdrama.models.pose_features`) -> Conv1D stack
  (kernel 5). Pose must already be at the model frame rate
  (:func:`isdrama.data.resample.resample_pose`).
- ``video``: frames (4 fps) -> timm backbone (:class:`VideoFrameEncoder`) -> a Transformer over
  z_c with cross-attention to the frame features (:class:`CrossModalBranch`).
- ``text``: the pose prompt -> a T5-family encoder (:class:`TextPromptEncoder`) -> the same
  :class:`CrossModalBranch` design over z_c with cross-attention to the text tokens.

Each branch gives z_p (B, T, d_model) on the frames of z_c / the pose; any subset may be given.
Pooled (B, proj_dim) and chunk (B, C, proj_dim) embeddings feed the contrastive loss.
Masks are True for valid positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from isdrama.models.contrastive import chunk_pool
from isdrama.models.layers import (
    ConvStack,
    FreezableBackbone,
    SinusoidalEncoding,
    Transformer,
    check_mask,
    masked_fill_invalid,
    masked_mean,
)
from isdrama.models.pose_features import GeometricFeatures

BRANCHES = ("geo", "video", "text")


@dataclass
class PoseEncoderConfig:
    """Hyper-parameters of :class:`MultimodalPoseEncoder`; the values live in
    configs/model/pose_encoder/*.yaml (no defaults here).

    Shared:
        d_model: width of z_p. content_dim: width of z_c.
        branches: enabled branches, a non-empty subset of geo/video/text.
        frame_rate: model frames per second (the codec's), the unit of all time positions.
        dropout. proj_dim: width of pooled/chunk embeddings.
        chunk_frames: frames per chunk embedding, None disables chunks.
        chunk_min_fraction: a chunk counts when this fraction of it is valid.
    Geometric:
        geo_blocks: residual conv blocks after the input conv. geo_kernel: their kernel.
        geo_position_scale, geo_velocity_scale, geo_include_distance: feature normalisation
            (:class:`~isdrama.models.pose_features.GeometricFeatures`; metres, m/s).
    Cross-attention Transformer (video and text):
        xattn_layers, xattn_heads, xattn_ff_mult.
    Video:
        video_backbone: timm model name.
        video_pretrained: load timm's pretrained weights (needs them in the HF cache).
        video_image_size: frames are resized to this square size; None = the backbone's
            default input size.
        video_freeze: backbone frozen (eval, no grad). video_fps: frame rate of the sampled
            frames. video_time_offset: frame i sits at (i + offset) / fps seconds (0.5: frames
            centred in their slot). video_batch: frames per backbone call.
        video_grid: None = the backbone's pooled frame embedding (as the paper's CLIP frame
            embeddings); g = its last feature map averaged on a g x g grid and flattened
            (C g^2 features per frame), which keeps where things are on screen (a pooled vector
            of a CNN hardly tells left from right).
    Text:
        text_model: hub id or local folder of a T5-family model.
        text_model_config: T5Config keyword arguments; when set, a randomly initialised
            encoder is built from them instead of loading ``text_model`` (offline demo).
        text_tokenizer: tokenizer hub id/folder; None = ``text_model``; ``"byt5"`` = the
            download-free ByT5 byte tokenizer. text_freeze: keep the text encoder frozen.
        text_max_tokens: prompts are truncated to this many tokens.
    """

    d_model: int
    content_dim: int
    branches: tuple[str, ...]
    frame_rate: float
    dropout: float
    proj_dim: int
    chunk_frames: Optional[int]
    chunk_min_fraction: float
    geo_blocks: int
    geo_kernel: int
    geo_position_scale: float
    geo_velocity_scale: float
    geo_include_distance: bool
    xattn_layers: int
    xattn_heads: int
    xattn_ff_mult: float
    video_backbone: str
    video_pretrained: bool
    video_image_size: Optional[int]
    video_freeze: bool
    video_fps: float
    video_time_offset: float
    video_batch: int
    video_grid: Optional[int]
    text_model: str
    text_model_config: Optional[dict[str, Any]]
    text_tokenizer: Optional[str]
    text_freeze: bool
    text_max_tokens: int

    def __post_init__(self) -> None:
        self.branches = tuple(self.branches)
        unknown = [b for b in self.branches if b not in BRANCHES]
        if unknown or not self.branches:
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {self.branches}")


class VideoFrameEncoder(FreezableBackbone):
    """Per-frame features from a timm image backbone (the cacheable part of the video branch).

    frames (B, F, 3, H, W) uint8 [0, 255] or float [0, 1], frame_mask (B, F) -> (B, F, C).
    Only valid frames are run; padded frames give zeros. ``grid`` None: C = the backbone's pooled
    embedding; g: C = channels x g x g, the last feature map (NCHW of a CNN, or the patch tokens
    of a ViT laid out on their square grid) averaged on a g x g grid, channel-major.
    """

    def __init__(
        self,
        backbone: str,
        pretrained: bool = True,
        image_size: Optional[int] = None,
        freeze: bool = True,
        batch: int = 64,
        grid: Optional[int] = None,
    ):
        super().__init__()
        import timm

        try:
            self.model = timm.create_model(backbone, pretrained=pretrained, num_classes=0)
        except Exception as err:  # unknown name, or weights not downloadable offline
            raise RuntimeError(
                f"video_backbone '{backbone}' (pretrained={pretrained}): timm could not create it: {err}"
            ) from err
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)
        default_size = cfg.get("input_size", (3, 224, 224))[-1]
        self.image_size = int(image_size or default_size)
        if grid is not None and int(grid) < 1:
            raise ValueError(f"video_grid: expected None or >= 1, got {grid}")
        self.grid = None if grid is None else int(grid)
        self.dim = int(self.model.num_features) * (self.grid**2 if self.grid else 1)
        self.batch = int(batch)
        self.set_frozen(freeze)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) prepared images -> (N, dim)."""
        if self.grid is None:
            return self.model(x)
        fm = self.model.forward_features(x)
        if fm.dim() == 3:  # (N, L, C) tokens: drop class/register tokens, lay patches on a square
            tokens = fm[:, int(getattr(self.model, "num_prefix_tokens", 0)) :]
            side = int(round(math.sqrt(tokens.shape[1])))
            if side * side != tokens.shape[1]:
                raise ValueError(
                    f"video_grid: backbone '{type(self.model).__name__}' gives "
                    f"{tokens.shape[1]} patch tokens, not a square grid"
                )
            fm = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        if fm.dim() != 4 or fm.shape[1] != self.model.num_features:
            raise ValueError(
                f"video_grid: expected an NCHW feature map with {self.model.num_features} "
                f"channels from forward_features, got {tuple(fm.shape)}"
            )
        return F.adaptive_avg_pool2d(fm, self.grid).flatten(1)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if not x.is_floating_point() else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self.mean) / self.std

    def forward(self, frames: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"video frames must be (B, F, 3, H, W), got {tuple(frames.shape)}")
        B, Fr = frames.shape[:2]
        if frame_mask is None:
            frame_mask = torch.ones(B, Fr, dtype=torch.bool, device=frames.device)
        check_mask(frame_mask, (B, Fr), "video_mask")
        flat = frames[frame_mask]  # (N, 3, H, W) valid frames only
        feats = []
        with self.grad_context():
            for start in range(0, flat.shape[0], self.batch):
                feats.append(self._embed(self._prepare(flat[start : start + self.batch])))
        out = frames.new_zeros(B, Fr, self.dim, dtype=torch.float32)
        if feats:
            out = out.masked_scatter(frame_mask[..., None], torch.cat(feats).float())
        return out


class TextPromptEncoder(FreezableBackbone):
    """Pose prompts -> T5-family encoder states (the cacheable part of the text branch).

    ``forward(prompts)``: B strings (None = no prompt) -> (B, S, C) features, (B, S) mask.
    A row without a prompt has an all-False mask.
    """

    def __init__(
        self,
        model: str,
        model_config: Optional[dict[str, Any]] = None,
        tokenizer: Optional[str] = None,
        freeze: bool = True,
        max_tokens: int = 64,
    ):
        super().__init__()
        from transformers import AutoTokenizer, ByT5Tokenizer, T5Config, T5EncoderModel

        tok_name = tokenizer or model
        try:
            if tok_name == "byt5":
                self.tokenizer = ByT5Tokenizer()
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(tok_name)
            if model_config is not None:
                self.model = T5EncoderModel(T5Config(**dict(model_config)))
            else:
                self.model = T5EncoderModel.from_pretrained(model)
        except OSError as err:
            raise OSError(
                f"text_model '{model}' / text_tokenizer '{tok_name}': could not load "
                f"(a hub id needs network or a filled cache; HF_HUB_OFFLINE is usually "
                f"set; for an offline demo use text_model_config + "
                f"text_tokenizer='byt5'): {err}"
            ) from err
        if len(self.tokenizer) > self.model.config.vocab_size:
            raise ValueError(
                f"text tokenizer has {len(self.tokenizer)} tokens but the T5 "
                f"model's vocab_size is {self.model.config.vocab_size}"
            )
        self.dim = int(self.model.config.d_model)
        self.max_tokens = int(max_tokens)
        self.set_frozen(freeze)

    def forward(self, prompts: Sequence[Optional[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        texts = [p if p else "" for p in prompts]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        ids, att = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        with self.grad_context():
            hidden = self.model(input_ids=ids, attention_mask=att).last_hidden_state
        has = torch.tensor([bool(p) for p in prompts], device=device)
        mask = att.bool() & has[:, None]
        return masked_fill_invalid(hidden.float(), mask), mask


class GeometricBranch(nn.Module):
    """pose (B, T, 9) at the model frame rate, mask (B, T) -> z_p (B, T, d)."""

    def __init__(self, cfg: PoseEncoderConfig):
        super().__init__()
        self.features = GeometricFeatures(
            position_scale=cfg.geo_position_scale,
            velocity_scale=cfg.geo_velocity_scale,
            include_distance=cfg.geo_include_distance,
        )
        self.convs = ConvStack(self.features.dim, cfg.d_model, cfg.geo_blocks, cfg.geo_kernel, cfg.dropout)

    def forward(self, pose: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.convs(self.features(pose), mask)


class CrossModalBranch(nn.Module):
    """A Transformer over z_c with cross-attention to a memory (video frames or text tokens).

    z_c (B, T, content_dim) at frame positions 0..T-1 and memory (B, S, memory_dim) with
    optional positions (B, S) in the same frame units (e.g. video time * frame_rate) ->
    z_p (B, T, d). Both streams get the same sinusoidal encoding so time can align.
    """

    def __init__(self, memory_dim: int, cfg: PoseEncoderConfig):
        super().__init__()
        self.query_in = nn.Linear(cfg.content_dim, cfg.d_model)
        self.memory_in = nn.Linear(memory_dim, cfg.d_model)
        self.positions = SinusoidalEncoding(cfg.d_model)
        self.transformer = Transformer(
            cfg.d_model,
            cfg.xattn_layers,
            cfg.xattn_heads,
            cfg.xattn_ff_mult,
            ff_kernel=1,
            cross_attention=True,
            dropout=cfg.dropout,
        )

    def forward(
        self,
        z_c: torch.Tensor,
        mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        memory_positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        B, T = mask.shape
        steps = torch.arange(T, device=z_c.device).expand(B, T)
        q = masked_fill_invalid(self.query_in(z_c), mask) + self.positions(steps)
        m = self.memory_in(memory)
        if memory_positions is not None:
            m = m + self.positions(memory_positions)
        return self.transformer(q, mask, memory=m, memory_mask=memory_mask)


class MultimodalPoseEncoder(nn.Module):
    """The three branches, their projection heads, pooled and chunk embeddings.

    Args:
        config: :class:`PoseEncoderConfig`.
    """

    def __init__(self, config: PoseEncoderConfig):
        super().__init__()
        self.config = cfg = config
        self.branch_modules = nn.ModuleDict()
        if "geo" in cfg.branches:
            self.branch_modules["geo"] = GeometricBranch(cfg)
        if "video" in cfg.branches:
            self.video_encoder = VideoFrameEncoder(
                cfg.video_backbone,
                cfg.video_pretrained,
                cfg.video_image_size,
                cfg.video_freeze,
                cfg.video_batch,
                cfg.video_grid,
            )
            self.branch_modules["video"] = CrossModalBranch(self.video_encoder.dim, cfg)
        if "text" in cfg.branches:
            self.text_encoder = TextPromptEncoder(
                cfg.text_model, cfg.text_model_config, cfg.text_tokenizer, cfg.text_freeze, cfg.text_max_tokens
            )
            self.branch_modules["text"] = CrossModalBranch(self.text_encoder.dim, cfg)
        self.heads = nn.ModuleDict(
            {b: nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.proj_dim)) for b in cfg.branches}
        )

    @property
    def branches(self) -> tuple[str, ...]:
        return self.config.branches

    # cacheable encoders -----------------------------------------------------------------------
    def encode_video_frames(self, frames: torch.Tensor, video_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """frames (B, F, 3, H, W) -> per-frame backbone features (B, F, C) (cacheable)."""
        self._require("video")
        return self.video_encoder(frames, video_mask)

    def encode_prompts(self, prompts: Sequence[Optional[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts (None = none) -> text features (B, S, C), mask (B, S) (cacheable)."""
        self._require("text")
        return self.text_encoder(prompts)

    def _require(self, branch: str) -> None:
        if branch not in self.branch_modules:
            raise ValueError(f"branch '{branch}' is not enabled (config.branches = {self.branches})")

    def video_positions(self, video_mask: torch.Tensor, video_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Frame positions in model frames (B, F): times (s, default (i + offset) / fps)
        times frame_rate."""
        if video_times is None:
            idx = torch.arange(video_mask.shape[1], device=video_mask.device, dtype=torch.float32)
            video_times = ((idx + self.config.video_time_offset) / self.config.video_fps).expand(video_mask.shape)
        return video_times.float() * self.config.frame_rate

    # forward ----------------------------------------------------------------------------------
    def forward(
        self,
        frame_mask: torch.Tensor,
        z_c: Optional[torch.Tensor] = None,
        pose: Optional[torch.Tensor] = None,
        pose_present: Optional[torch.Tensor] = None,
        video: Optional[torch.Tensor] = None,
        video_features: Optional[torch.Tensor] = None,
        video_mask: Optional[torch.Tensor] = None,
        video_times: Optional[torch.Tensor] = None,
        prompts: Optional[Sequence[Optional[str]]] = None,
        text_features: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
        with_chunks: bool = True,
    ) -> dict[str, Any]:
        """Encode whichever pose prompts are given.

        Args:
            frame_mask: (B, T) bool, valid model frames (the frames of z_c / pose).
            z_c: (B, T, content_dim) content frames; required by video and text.
            pose: (B, T, 9) geometric pose at the model frame rate; pose_present (B,) bool
                marks rows that really have one (default: all).
            video: (B, F, 3, H, W) frames, or video_features (B, F, C) from
                :meth:`encode_video_frames`; video_mask (B, F); video_times (B, F) seconds
                from the line start (default (i + video_time_offset) / video_fps).
            prompts: B pose prompts (None = none), or text_features (B, S, C) + text_mask
                (B, S) from :meth:`encode_prompts`.
            with_chunks: also return chunk embeddings (when config.chunk_frames is set).

        Returns a dict:
            ``z_p``: branch -> (B, T, d_model), zero on padded frames;
            ``present``: branch -> (B,) bool, rows that had that branch's input;
            ``fused``: (B, T, d_model), mean of z_p over the branches present per row;
            ``pooled``: branch -> (B, proj_dim); ``frame_mask``: (B, T);
            with chunks: ``chunks``: branch -> (B, C, proj_dim) and ``chunk_mask`` (B, C).
        """
        if frame_mask.dim() != 2 or frame_mask.dtype != torch.bool:
            raise ValueError(
                f"frame_mask must be a (B, T) bool tensor, got {tuple(frame_mask.shape)} {frame_mask.dtype}"
            )
        B, T = frame_mask.shape
        device = frame_mask.device
        z_p: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        if z_c is not None and z_c.shape[:2] != (B, T):
            raise ValueError(f"z_c must be (B, T, D) = ({B}, {T}, D), got {tuple(z_c.shape)}")

        if pose is not None:
            self._require("geo")
            if pose.shape[:2] != (B, T):
                raise ValueError(
                    f"pose must be ({B}, {T}, 9) at the model frame rate, got "
                    f"{tuple(pose.shape)} (resample with "
                    f"isdrama.data.resample.resample_pose)"
                )
            z_p["geo"] = self.branch_modules["geo"](pose, frame_mask)
            present["geo"] = (
                torch.ones(B, dtype=torch.bool, device=device)
                if pose_present is None
                else pose_present.to(device).bool()
            )

        if video is not None or video_features is not None:
            self._require("video")
            if video_features is None:
                video_features = self.encode_video_frames(video, video_mask)
            if video_mask is None:
                video_mask = torch.ones(video_features.shape[:2], dtype=torch.bool, device=device)
            check_mask(video_mask, tuple(video_features.shape[:2]), "video_mask")
            z_p["video"] = self._cross(
                "video", z_c, frame_mask, video_features, video_mask, self.video_positions(video_mask, video_times)
            )
            present["video"] = video_mask.any(dim=1)

        if prompts is not None or text_features is not None:
            self._require("text")
            if text_features is None:
                if len(prompts) != B:
                    raise ValueError(f"got {len(prompts)} prompts for a batch of {B}")
                text_features, text_mask = self.encode_prompts(prompts)
            if text_mask is None:
                raise ValueError("text_features given without text_mask (B, S)")
            check_mask(text_mask, tuple(text_features.shape[:2]), "text_mask")
            z_p["text"] = self._cross("text", z_c, frame_mask, text_features, text_mask, None)
            present["text"] = text_mask.any(dim=1)

        if not z_p:
            raise ValueError("no pose prompt given: pass pose, video/video_features or prompts/text_features")
        out: dict[str, Any] = {
            "z_p": z_p,
            "present": present,
            "frame_mask": frame_mask,
            "fused": self.fuse(z_p, present),
            "pooled": {b: self.heads[b](masked_mean(z, frame_mask)) for b, z in z_p.items()},
        }
        if with_chunks and self.config.chunk_frames:
            chunks, chunk_mask = {}, None
            for b, z in z_p.items():
                pooled, chunk_mask = chunk_pool(z, frame_mask, self.config.chunk_frames, self.config.chunk_min_fraction)
                chunks[b] = self.heads[b](pooled)
            out["chunks"], out["chunk_mask"] = chunks, chunk_mask
        return out

    def _cross(
        self,
        branch: str,
        z_c: Optional[torch.Tensor],
        frame_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        positions: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if z_c is None:
            raise ValueError(f"the {branch} branch attends from z_c: pass z_c (B, T, {self.config.content_dim})")
        return self.branch_modules[branch](z_c, frame_mask, memory.to(z_c.dtype), memory_mask, positions)

    @staticmethod
    def fuse(z_p: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over the branches present in each row: branch -> (B, T, d) -> (B, T, d)."""
        stacked = torch.stack(list(z_p.values()))  # (N, B, T, d)
        weight = torch.stack([present[b] for b in z_p]).to(stacked.dtype)  # (N, B)
        weight = rearrange(weight, "n b -> n b 1 1")
        return (stacked * weight).sum(0) / weight.sum(0).clamp_min(1.0)


def select_pose_branches(front_out: Mapping[str, Any], branches: Optional[Sequence[str]] = None) -> torch.Tensor:
    """z_p (B, T, d): the mean over the present branches named in ``branches`` (None: all).
    Raises ValueError when a named branch did not run or a line has none of them."""
    if branches is None:
        return front_out["fused"]
    missing = [b for b in branches if b not in front_out["z_p"]]
    if missing:
        raise ValueError(f"pose branch(es) {missing} not computed for this batch (have {sorted(front_out['z_p'])})")
    z_p = {b: front_out["z_p"][b] for b in branches}
    present = {b: front_out["present"][b] for b in branches}
    if not torch.stack(list(present.values())).any(0).all():
        raise ValueError(f"some lines have none of the pose branches {list(branches)}")
    return MultimodalPoseEncoder.fuse(z_p, present)


def sample_pose_branches(
    front_out: Mapping[str, Any], single_branch: float, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """z_p (B, T, d) for training: per line, with p = ``single_branch`` one present branch
    (uniform among the line's present ones), else the mean over all present branches."""
    names = list(front_out["z_p"])
    present = torch.stack([front_out["present"][b] for b in names], dim=1)  # (B, N)
    if single_branch <= 0 or len(names) == 1:
        return front_out["fused"]
    B = present.shape[0]
    u = torch.rand(B, generator=generator, device="cpu").to(present.device)
    scores = torch.rand(B, len(names), generator=generator, device="cpu").to(present.device)
    pick = torch.where(present, scores, torch.full_like(scores, -1.0)).argmax(dim=1)
    one = F.one_hot(pick, len(names)).bool() & present
    keep = torch.where((u < single_branch)[:, None] & one.any(dim=1, keepdim=True), one, present)
    return MultimodalPoseEncoder.fuse(front_out["z_p"], {b: keep[:, i] for i, b in enumerate(names)})
