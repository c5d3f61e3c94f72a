"""The conditioning front end of every stage: content z_c and pose z_p of a batch of lines.

:class:`ConditioningFrontEnd` holds the content encoder (phones -> durations -> z_c), the
Multimodal Pose Encoder (geo | video | text -> z_p), the caches of the frozen video / text
backbones' features and the video-feature standardiser. It takes tensors (and the prompt
strings / line keys the caches need), never a batch object. Pose pre-training trains it; a later
stage loads it from a pose-pretrain checkpoint with :meth:`ConditioningFrontEnd.from_pretrained`.

State-dict names: in a pose-pretrain checkpoint the front end sits under ``frontend.``;
checkpoints written before it existed hold the same entries without the prefix
(``content.``, ``pose_encoder.``, ``video_norm.``), which :func:`upgrade_state_dict` maps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from isdrama.data.sampler import pad_stack
from isdrama.data.text_tokenizer import Vocabulary
from isdrama.models.content import ContentEncoder, ContentEncoderConfig
from isdrama.models.feature_norm import FeatureStandardizer
from isdrama.models.pose_encoder import MultimodalPoseEncoder, PoseEncoderConfig
from isdrama.utils.config import build_config

log = logging.getLogger(__name__)

#: where the front end sits in a pose-pretrain LightningModule's state dict
FRONTEND_PREFIX = "frontend."
#: the front end's top-level modules (their names in checkpoints written before the prefix)
FRONTEND_MODULES = ("content", "pose_encoder", "video_norm")


@dataclass
class FrontEndConfig:
    """What the front end is built from (the ``model`` group of a stage, or a checkpoint's hparams).

    content: :class:`ContentEncoderConfig` (configs/model/content/*.yaml).
    pose_encoder: :class:`PoseEncoderConfig` (configs/model/pose_encoder/*.yaml).
    feature_cache: cache the features of frozen video / text backbones (per line key / prompt).
    video_feature_norm: standardise the frozen video backbone's features per channel
        (:mod:`isdrama.models.feature_norm`).
    """

    content: ContentEncoderConfig
    pose_encoder: PoseEncoderConfig
    feature_cache: bool
    video_feature_norm: bool


#: the hyper-parameters of a pose-pretrain checkpoint that configure the front end
FRONTEND_KEYS = tuple(f.name for f in fields(FrontEndConfig))


def upgrade_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A pose-pretrain state dict with the front end's entries under ``frontend.``: entries of a
    checkpoint written before the front end existed (``content.*`` ...) get the prefix."""
    return {(FRONTEND_PREFIX + k if k.split(".", 1)[0] in FRONTEND_MODULES else k): v for k, v in state_dict.items()}


def _clear_cache_after_load(module: "ConditioningFrontEnd", incompatible_keys: Any) -> None:
    """Load-state-dict post hook (a module-level function, so the module pickles)."""
    module.clear_feature_cache()


class ConditioningFrontEnd(nn.Module):
    """Content encoder + Multimodal Pose Encoder + frozen-feature caches + video standardiser.

    Args:
        config: :class:`FrontEndConfig`.
        vocab: content-token vocabulary (default :meth:`Vocabulary.default`).
    """

    def __init__(self, config: FrontEndConfig, vocab: Optional[Vocabulary] = None):
        super().__init__()
        self.config = config
        self.content = ContentEncoder(config.content, vocab=vocab)
        self.pose_encoder = MultimodalPoseEncoder(config.pose_encoder)
        pe = self.pose_encoder.config
        if config.content.d_model != pe.content_dim:
            raise ValueError(
                f"model.pose_encoder.content_dim ({pe.content_dim}) must "
                f"equal model.content.d_model ({config.content.d_model})"
            )
        if config.content.frame_rate != pe.frame_rate:
            raise ValueError(
                "model.content.frame_rate and model.pose_encoder.frame_rate differ: "
                f"{config.content.frame_rate} vs {pe.frame_rate}"
            )
        self.video_norm: Optional[FeatureStandardizer] = None
        if config.video_feature_norm and "video" in pe.branches:
            if not pe.video_freeze:
                raise ValueError(
                    "model.video_feature_norm needs a frozen video backbone "
                    "(model.pose_encoder.video_freeze=true); set it false otherwise"
                )
            self.video_norm = FeatureStandardizer(self.pose_encoder.video_encoder.dim)
        self._video_cache: dict[str, torch.Tensor] = {}
        self._text_cache: dict[str, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(_clear_cache_after_load)

    # ---------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, checkpoint: Union[str, Path], map_location: Any = "cpu") -> "ConditioningFrontEnd":
        """The front end of a pose-pretrain Lightning checkpoint (its hyper-parameters and
        weights), in eval mode. Raises ValueError naming the file and what is missing when the
        file is not a pose-pretrain checkpoint."""
        path = Path(checkpoint)
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        for key in ("hyper_parameters", "state_dict"):
            if not isinstance(ckpt, Mapping) or key not in ckpt:
                raise ValueError(f"{path}: not a Lightning checkpoint (no '{key}')")
        hp = ckpt["hyper_parameters"]
        missing = [k for k in FRONTEND_KEYS if k not in hp]
        if missing:
            raise ValueError(
                f"{path}: not a pose-pretrain checkpoint: hyper_parameters lack {missing} (has {sorted(hp)})"
            )
        config = build_config(FrontEndConfig, {k: hp[k] for k in FRONTEND_KEYS}, f"{path} hyper_parameters")
        state = {
            k[len(FRONTEND_PREFIX) :]: v
            for k, v in upgrade_state_dict(ckpt["state_dict"]).items()
            if k.startswith(FRONTEND_PREFIX)
        }
        if not state:
            raise ValueError(
                f"{path}: not a pose-pretrain checkpoint: its state_dict has no '{FRONTEND_PREFIX}*' entries"
            )
        model = cls(config, vocab=ContentEncoder.vocab_from_state_dict(state, "content."))
        model.load_state_dict(state)
        return model.eval()

    # ---------------------------------------------------------------------------- plumbing
    @property
    def branches(self) -> tuple[str, ...]:
        return self.pose_encoder.branches

    @property
    def frame_rate(self) -> float:
        return self.content.frame_rate

    @property
    def video_norm_unfitted(self) -> bool:
        """True while a video standardiser waits for :meth:`fit_video_norm`."""
        return self.video_norm is not None and not self.video_norm.is_fitted

    def clear_feature_cache(self) -> None:
        """Forget cached backbone features (done whenever weights are loaded)."""
        self._video_cache.clear()
        self._text_cache.clear()

    def _caches_video(self) -> bool:
        return self.config.feature_cache and self.pose_encoder.config.video_freeze

    def _caches_text(self) -> bool:
        return self.config.feature_cache and self.pose_encoder.config.text_freeze

    # ---------------------------------------------------------------------------- features
    def raw_video_features(
        self, video: torch.Tensor, video_mask: torch.Tensor, keys: Optional[Sequence[str]] = None
    ) -> torch.Tensor:
        """Backbone features (B, F, C) of frames (B, F, 3, H, W) with mask (B, F); cached per
        line key when the backbone is frozen and ``keys`` (B) are given."""
        if keys is None or not self._caches_video():
            return self.pose_encoder.encode_video_frames(video, video_mask)
        missing = [i for i, k in enumerate(keys) if k not in self._video_cache]
        if missing:
            idx = torch.tensor(missing, device=video.device)
            with torch.no_grad():
                feats = self.pose_encoder.encode_video_frames(video[idx], video_mask[idx])
            with torch.inference_mode(False):  # a normal tensor even when filled during validation
                for j, i in enumerate(missing):
                    n = int(video_mask[i].sum())
                    self._video_cache[keys[i]] = feats[j, :n].detach().cpu().clone()
        rows = [self._video_cache[k].to(video.device) for k in keys]
        out = torch.zeros(len(rows), video.shape[1], rows[0].shape[-1], device=video.device)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
        return out

    def video_features(
        self, video: torch.Tensor, video_mask: torch.Tensor, keys: Optional[Sequence[str]] = None
    ) -> torch.Tensor:
        """(B, F, C) video features for the pose encoder: backbone features, standardised when
        ``video_feature_norm`` (fitted from these frames if nothing fitted it before)."""
        feats = self.raw_video_features(video, video_mask, keys)
        if self.video_norm is None:
            return feats
        if not self.video_norm.is_fitted:
            log.warning("video feature statistics fitted from a single batch (no fit on the training split)")
            self.video_norm.fit_moments([FeatureStandardizer.moments(feats[video_mask])])
        return self.video_norm(feats, video_mask)

    @torch.no_grad()
    def video_feature_moments(
        self, video: torch.Tensor, video_mask: torch.Tensor, keys: Optional[Sequence[str]] = None
    ) -> torch.Tensor:
        """(3, C) moments of the backbone features of the valid frames, for :meth:`fit_video_norm`."""
        return FeatureStandardizer.moments(self.raw_video_features(video, video_mask, keys)[video_mask])

    def fit_video_norm(self, moments: Iterable[torch.Tensor]) -> None:
        """Fit the video standardiser on summed :meth:`video_feature_moments` (e.g. of the
        training split, all ranks)."""
        if self.video_norm is None:
            raise ValueError("fit_video_norm: model.video_feature_norm is off or there is no video branch")
        parts = list(moments)
        if not parts:
            raise ValueError("model.video_feature_norm: the training split has no video frames")
        self.video_norm.fit_moments(parts)
        log.info(
            "video features standardised: mean |offset| %.3g, mean std %.3g",
            float(self.video_norm.mean.abs().mean()),
            float(self.video_norm.std.mean()),
        )

    def text_features(
        self, prompts: Sequence[Optional[str]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts (None = none) -> (B, S, C) text features and (B, S) mask (cached per
        prompt string when the text encoder is frozen)."""
        if not self._caches_text():
            return self.pose_encoder.encode_prompts(prompts)
        todo = sorted({p for p in prompts if p and p not in self._text_cache})
        if todo:
            with torch.no_grad():
                feats, mask = self.pose_encoder.encode_prompts(todo)
            with torch.inference_mode(False):
                for j, p in enumerate(todo):
                    n = int(mask[j].sum())
                    self._text_cache[p] = feats[j, :n].detach().cpu().clone()
        dim = self.pose_encoder.text_encoder.dim
        rows = [self._text_cache[p] if p else torch.zeros(0, dim) for p in prompts]
        feats, mask = pad_stack([r.to(device) for r in rows], dim=0)
        if feats.shape[1] == 0:  # no prompt at all
            feats, mask = feats.new_zeros(len(rows), 1, dim), mask.new_zeros(len(rows), 1)
        return feats, mask.to(device)

    # ---------------------------------------------------------------------------- forward
    def forward(
        self,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        frame_mask: torch.Tensor,
        durations: Optional[torch.Tensor] = None,
        pose: Optional[torch.Tensor] = None,
        pose_present: Optional[torch.Tensor] = None,
        video: Optional[torch.Tensor] = None,
        video_mask: Optional[torch.Tensor] = None,
        prompts: Optional[Sequence[Optional[str]]] = None,
        keys: Optional[Sequence[str]] = None,
        with_chunks: bool = True,
    ) -> dict[str, Any]:
        """Content and pose conditioning of B lines of T model frames.

        Args:
            tokens, token_mask: (B, L) content token ids and their mask.
            frame_mask: (B, T) valid model frames of each line.
            durations: (B, L) ground-truth frames per token (training; each row must add up to
                its line's frames); None: predicted and scaled to each line's frame count.
            pose, pose_present: (B, T, 9) geometric pose at the model frame rate; (B,) rows that
                have one (default all).
            video, video_mask: (B, F, 3, H, W) frames (uint8 or [0, 1] floats) and (B, F) mask.
            prompts: B pose prompts (None = no prompt); the text branch runs when any is given.
            keys: B line keys: the video-feature cache's keys (no caching without them) and the
                lines named in errors.
            with_chunks: also return chunk embeddings.

        Inputs of branches that are not enabled are ignored.

        Returns the :class:`MultimodalPoseEncoder` dict (``z_p``, ``present``, ``fused``,
        ``pooled``, ``frame_mask``, ``chunks`` / ``chunk_mask``) plus ``z_c`` (B, T, D_c),
        ``log_duration`` (B, L) predicted, ``durations`` (B, L) used, and ``duration_loss``
        (scalar) when ``durations`` were given.
        """
        T = frame_mask.shape[1]
        total = None if durations is not None else frame_mask.sum(dim=1)
        content = self.content(tokens, token_mask, durations=durations, total_frames=total, n_frames=T)
        if not torch.equal(content["frame_mask"], frame_mask):
            bad = (content["frame_mask"] != frame_mask).any(dim=1).nonzero().flatten().tolist()
            named = [keys[i] for i in bad[:3]] if keys is not None else bad[:3]
            raise ValueError(
                f"content durations do not add up to the lines' frame counts (lines {named}"
                f"{'...' if len(bad) > 3 else ''}): the tokenizer's frames must sum to the line's frames"
            )
        kwargs: dict[str, Any] = {"frame_mask": frame_mask, "z_c": content["z_c"], "with_chunks": with_chunks}
        if "geo" in self.branches and pose is not None:
            kwargs.update(pose=pose, pose_present=pose_present)
        if "video" in self.branches and video is not None:
            if video_mask is None:
                video_mask = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
            kwargs.update(video_features=self.video_features(video, video_mask, keys), video_mask=video_mask)
        if "text" in self.branches and prompts is not None and any(prompts):
            kwargs["text_features"], kwargs["text_mask"] = self.text_features(list(prompts), frame_mask.device)
        out = self.pose_encoder(**kwargs)
        out["z_c"] = content["z_c"]
        out["log_duration"] = content["log_duration"]
        out["durations"] = content["durations"]
        if "duration_loss" in content:
            out["duration_loss"] = content["duration_loss"]
        return out


__all__ = ["ConditioningFrontEnd", "FrontEndConfig", "FRONTEND_KEYS", "upgrade_state_dict"]
