"""Pose pre-training (issue 4, sections 4-5): content path + Multimodal Pose Encoder, contrastive.

Per batch (a :class:`~isdrama.data.dataset.DramaBatch`):

- content: phone tokens (B, L) with ground-truth frame durations -> z_c (B, T, D_c) and the
  log-duration MSE;
- pose: every enabled branch whose input the batch carries (geometric pose (B, T, 9), video
  frames (B, F, 3, H, W), text prompts) -> pooled (B, P) and chunk (B, C, P) embeddings;
- loss = symmetric InfoNCE over the branch pairs (in-batch negatives, lines of the same drama
  up-weighted as hard negatives, near-identical trajectories never used as negatives)
  + ``duration_weight`` * duration loss.

Validation logs the loss, cross-modal retrieval R@k for every pair among a fixed number of
candidates, and linear-probe accuracies (left/right, front/back, moving/static, distance) of
every branch: probes are fitted on training-split embeddings and scored on the validation
split (see :mod:`isdrama.lit.probes`). Everything goes through ``self.log`` (every Lightning
logger, W&B included); a W&B / TensorBoard logger also gets a retrieval-matrix + embedding image.

Frozen video/text backbones are deterministic, so their features are cached per line / prompt
(``feature_cache``); the cache is dropped when weights are loaded.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from isdrama.data.dataset import DramaBatch
from isdrama.data.sampler import pad_stack
from isdrama.lit.feature_norm import FeatureStandardizer
from isdrama.lit.optim import configure_adam
from isdrama.lit.probes import LabelConfig, ProbeConfig, TASKS, grouped_retrieval, pose_labels, summarize_probes
from isdrama.models.content import ContentEncoder, ContentEncoderConfig
from isdrama.models.contrastive import DEFAULT_PAIRS, MultimodalContrastiveLoss
from isdrama.models.layers import masked_mean
from isdrama.models.pose_encoder import MultimodalPoseEncoder, PoseEncoderConfig

log = logging.getLogger(__name__)

EMBEDDINGS = ("pooled", "z_p")


def _plain(value: Any) -> Any:
    """DictConfig -> plain containers (resolved), so hparams survive a checkpoint."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


class PosePretrainModule(pl.LightningModule):
    """Content encoder + Multimodal Pose Encoder trained contrastively.

    Args:
        content: ContentEncoderConfig fields (configs/model/content/*.yaml).
        pose_encoder: PoseEncoderConfig fields (configs/model/pose_encoder/*.yaml).
        contrastive: MultimodalContrastiveLoss arguments (pairs, temperature, chunk weight,
            hard_negative_weight for lines of the same drama).
        optimizer: :class:`isdrama.lit.optim.AdamConfig` fields (configs/model/optimizer/).
        duration_weight: weight of the duration loss in the total.
        false_negative_radius_m: two lines whose trajectories start and end within this many
            metres of each other are not used as each other's negatives (None: all are).
        feature_cache: cache the features of frozen video / text backbones.
        video_feature_norm: standardise the frozen video backbone's features per channel with
            training-split statistics (:mod:`isdrama.lit.feature_norm`), fitted at the start of
            fit (or from the first batch seen when used without a trainer); saved as buffers.
        probes: ``enabled``, ``every_n_val`` (probe every n-th validation), ``max_train_lines``
            (None = all), ``embedding`` (``pooled``: the contrastive space; ``z_p``: the
            time-mean of z_p), ``labels`` (:class:`LabelConfig`), ``fit`` (:class:`ProbeConfig`).
        retrieval: ``group_size`` (candidates per query), ``ks``, ``seed`` (grouping order),
            ``pairs`` (scored pairs, default all three, whatever the loss uses).
        log_images: send a retrieval matrix / embedding scatter to image-capable loggers.
    """

    def __init__(self, content: Mapping, pose_encoder: Mapping, contrastive: Mapping, optimizer: Mapping,
                 duration_weight: float = 1.0, false_negative_radius_m: Optional[float] = 0.25,
                 feature_cache: bool = True, video_feature_norm: bool = True,
                 probes: Optional[Mapping] = None, retrieval: Optional[Mapping] = None,
                 log_images: bool = True):
        super().__init__()
        hp = {"content": _plain(content), "pose_encoder": _plain(pose_encoder),
              "contrastive": _plain(contrastive), "optimizer": _plain(optimizer),
              "duration_weight": float(duration_weight), "false_negative_radius_m": false_negative_radius_m,
              "feature_cache": bool(feature_cache), "video_feature_norm": bool(video_feature_norm),
              "probes": _plain(probes or {}),
              "retrieval": _plain(retrieval or {}), "log_images": bool(log_images)}
        self.save_hyperparameters(hp)
        self.content = ContentEncoder(ContentEncoderConfig(**hp["content"]))
        self.pose_encoder = MultimodalPoseEncoder(PoseEncoderConfig(**hp["pose_encoder"]))
        if self.content.config.d_model != self.pose_encoder.config.content_dim:
            raise ValueError(f"model.pose_encoder.content_dim ({self.pose_encoder.config.content_dim}) must "
                             f"equal model.content.d_model ({self.content.config.d_model})")
        if self.content.config.frame_rate != self.pose_encoder.config.frame_rate:
            raise ValueError("model.content.frame_rate and model.pose_encoder.frame_rate differ: "
                             f"{self.content.config.frame_rate} vs {self.pose_encoder.config.frame_rate}")
        self.contrastive = MultimodalContrastiveLoss(**hp["contrastive"])
        self.video_norm: Optional[FeatureStandardizer] = None
        if video_feature_norm and "video" in self.pose_encoder.branches:
            if not self.pose_encoder.config.video_freeze:
                raise ValueError("model.video_feature_norm needs a frozen video backbone "
                                 "(model.pose_encoder.video_freeze=true); set it false otherwise")
            self.video_norm = FeatureStandardizer(self.pose_encoder.video_encoder.dim)
        probe_cfg = dict(hp["probes"])
        self.labels_cfg = LabelConfig(**probe_cfg.pop("labels", {}))
        self.probe_fit_cfg = ProbeConfig(**probe_cfg.pop("fit", {}))
        self.probe_enabled = bool(probe_cfg.pop("enabled", True))
        self.probe_every = int(probe_cfg.pop("every_n_val", 1))
        self.probe_max_train = probe_cfg.pop("max_train_lines", None)
        self.probe_embedding = str(probe_cfg.pop("embedding", "pooled"))
        if probe_cfg:
            raise ValueError(f"model.probes: unknown key(s) {sorted(probe_cfg)}")
        if self.probe_embedding not in EMBEDDINGS:
            raise ValueError(f"model.probes.embedding must be one of {EMBEDDINGS}, got {self.probe_embedding!r}")
        ret = dict(hp["retrieval"])
        self.retrieval_group = int(ret.pop("group_size", 32))
        self.retrieval_ks = tuple(int(k) for k in ret.pop("ks", (1, 5)))
        self.retrieval_seed = int(ret.pop("seed", 0))
        self.retrieval_pairs = tuple((str(a), str(b)) for a, b in ret.pop("pairs", DEFAULT_PAIRS))
        if ret:
            raise ValueError(f"model.retrieval: unknown key(s) {sorted(ret)}")
        self._video_cache: dict[str, torch.Tensor] = {}
        self._text_cache: dict[str, torch.Tensor] = {}
        self._val_rows: list[dict[str, Any]] = []
        self._val_count = 0

    # ---------------------------------------------------------------------------- plumbing
    @property
    def branches(self) -> tuple[str, ...]:
        return self.pose_encoder.branches

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, DramaBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adam(self.parameters(), **self.hparams.optimizer)

    def clear_feature_cache(self) -> None:
        self._video_cache.clear()
        self._text_cache.clear()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.clear_feature_cache()

    def on_fit_start(self) -> None:
        self.clear_feature_cache()
        if self.video_norm is not None and not self.video_norm.is_fitted:
            dm = getattr(self.trainer, "datamodule", None)
            if dm is not None and hasattr(dm, "train_dataloader"):
                self.fit_video_norm(dm.train_dataloader())

    @torch.no_grad()
    def fit_video_norm(self, batches: Iterable[DramaBatch]) -> None:
        """Fit the video-feature standardiser on the backbone features of ``batches`` (all ranks'
        statistics under torch.distributed); fills the feature cache on the way."""
        parts = []
        for batch in batches:
            if batch.video is None:
                continue
            batch = batch.to(self.device)
            feats = self._raw_video_features(batch)
            parts.append(FeatureStandardizer.moments(feats[batch.video_mask]).cpu())
        parts = _gather(parts)
        if not parts:
            raise ValueError("model.video_feature_norm: the training split has no video frames")
        self.video_norm.fit_moments(parts)
        log.info("video features standardised: mean |offset| %.3g, mean std %.3g",
                 float(self.video_norm.mean.abs().mean()), float(self.video_norm.std.mean()))

    def _cache_video(self) -> bool:
        return self.hparams.feature_cache and self.pose_encoder.config.video_freeze

    def _cache_text(self) -> bool:
        return self.hparams.feature_cache and self.pose_encoder.config.text_freeze

    # ---------------------------------------------------------------------------- features
    def _video_features(self, batch: DramaBatch) -> torch.Tensor:
        """(B, F, C) video features for the pose encoder: backbone features, standardised when
        ``video_feature_norm`` (fitted from this batch if nothing fitted it before)."""
        feats = self._raw_video_features(batch)
        if self.video_norm is None:
            return feats
        if not self.video_norm.is_fitted:
            log.warning("video feature statistics fitted from a single batch (no fit on the training split)")
            self.video_norm.fit_moments([FeatureStandardizer.moments(feats[batch.video_mask])])
        return self.video_norm(feats, batch.video_mask)

    def _raw_video_features(self, batch: DramaBatch) -> torch.Tensor:
        """(B, F, C) backbone features of the batch's frames (cached per line when frozen)."""
        if not self._cache_video():
            return self.pose_encoder.encode_video_frames(batch.video, batch.video_mask)
        missing = [i for i, k in enumerate(batch.keys) if k not in self._video_cache]
        if missing:
            idx = torch.tensor(missing, device=batch.video.device)
            with torch.no_grad():
                feats = self.pose_encoder.encode_video_frames(batch.video[idx], batch.video_mask[idx])
            with torch.inference_mode(False):  # a normal tensor even when filled during validation
                for j, i in enumerate(missing):
                    n = int(batch.video_mask[i].sum())
                    self._video_cache[batch.keys[i]] = feats[j, :n].detach().cpu().clone()
        rows = [self._video_cache[k].to(self.device) for k in batch.keys]
        out = torch.zeros(len(rows), batch.video.shape[1], rows[0].shape[-1], device=self.device)
        for i, r in enumerate(rows):
            out[i, :r.shape[0]] = r
        return out

    def _text_features(self, prompts: list[Optional[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, C) text features and (B, S) mask (cached per prompt string when frozen)."""
        if not self._cache_text():
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
        feats, mask = pad_stack([r.to(self.device) for r in rows], dim=0)
        if feats.shape[1] == 0:  # no prompt in the whole batch
            feats, mask = feats.new_zeros(len(rows), 1, dim), mask.new_zeros(len(rows), 1)
        return feats, mask.to(self.device)

    # ---------------------------------------------------------------------------- forward
    def forward(self, batch: DramaBatch, with_chunks: bool = True) -> dict[str, Any]:
        """Encode a batch: the pose encoder's output dict plus ``duration_loss`` and ``z_c``."""
        if batch.content_ids is None:
            raise ValueError("the batch has no content tokens: set data.content_tokenizer (e.g. mode: auto)")
        T = batch.mask.shape[1]
        content = self.content(batch.content_ids, batch.content_mask, durations=batch.content_frames, n_frames=T)
        if not torch.equal(content["frame_mask"], batch.mask):
            raise ValueError("content durations do not add up to the lines' frame counts "
                             f"(keys {batch.keys[:3]}...): the tokenizer's frames must sum to batch.frames")
        kwargs: dict[str, Any] = {"frame_mask": batch.mask, "z_c": content["z_c"], "with_chunks": with_chunks}
        if "geo" in self.branches and batch.pose is not None:
            kwargs.update(pose=batch.pose, pose_present=batch.pose_mask)
        if "video" in self.branches and batch.video is not None:
            kwargs.update(video_features=self._video_features(batch), video_mask=batch.video_mask)
        if "text" in self.branches and any(batch.pose_prompts):
            kwargs["text_features"], kwargs["text_mask"] = self._text_features(list(batch.pose_prompts))
        out = self.pose_encoder(**kwargs)
        out["z_c"] = content["z_c"]
        out["duration_loss"] = content["duration_loss"]
        return out

    def valid_negatives(self, batch: DramaBatch) -> Optional[torch.Tensor]:
        """(B, B) bool: False for pairs of lines whose trajectories start and end within
        ``false_negative_radius_m`` (the same trajectory twice is no negative)."""
        radius = self.hparams.false_negative_radius_m
        if radius is None or batch.pose is None:
            return None
        last = (batch.frames - 1).clamp_min(0)
        start = batch.pose[:, 0, :3]
        end = batch.pose[torch.arange(len(batch), device=batch.pose.device), last, :3]
        close = (torch.cdist(start, start) < radius) & (torch.cdist(end, end) < radius)
        has = batch.pose_mask if batch.pose_mask is not None else torch.ones_like(close[0])
        close = close & has[:, None] & has[None, :]
        return ~close

    def losses(self, batch: DramaBatch, out: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Contrastive terms + duration loss -> dict with ``loss`` (the total)."""
        c = self.contrastive(out["pooled"], present=out["present"], chunks=out.get("chunks"),
                             chunk_mask=out.get("chunk_mask"), groups=batch.drama_ids,
                             valid_negatives=self.valid_negatives(batch))
        total = c["loss"] + self.hparams.duration_weight * out["duration_loss"]
        result = {f"contrastive/{k}": v for k, v in c.items() if k != "loss"}
        result.update(loss=total, contrastive=c["loss"], duration=out["duration_loss"])
        return result

    # ---------------------------------------------------------------------------- steps
    def training_step(self, batch: DramaBatch, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        losses = self.losses(batch, out)
        loss = losses["loss"]
        self.log("train/loss", losses.pop("loss").detach(), batch_size=len(batch), on_step=True,
                 on_epoch=True, prog_bar=True)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=len(batch),
                      on_step=True, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_rows = []

    def validation_step(self, batch: DramaBatch, batch_idx: int) -> None:
        out = self(batch)
        losses = self.losses(batch, out)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch), on_epoch=True,
                      sync_dist=True)
        self._val_rows.append(self._rows(batch, out))

    def _rows(self, batch: DramaBatch, out: Mapping[str, Any]) -> dict[str, Any]:
        """CPU copies of what the epoch-end metrics need from one batch."""
        emb = {}
        for b, pooled in out["pooled"].items():
            e = pooled if self.probe_embedding == "pooled" else masked_mean(out["z_p"][b], batch.mask)
            emb[b] = (pooled.detach().cpu(), e.detach().cpu(), out["present"][b].detach().cpu())
        labels = None
        if batch.pose is not None:
            lab = pose_labels(batch.pose, batch.mask, self.labels_cfg)
            if batch.pose_mask is not None:
                lab = {k: v.masked_fill(~batch.pose_mask, -1) for k, v in lab.items()}
            labels = {k: v.cpu() for k, v in lab.items()}
        return {"emb": emb, "labels": labels, "keys": list(batch.keys)}

    @staticmethod
    def _collect(rows: list[dict[str, Any]]) -> tuple[dict, dict, dict, list[str]]:
        """Concatenate rows -> (retrieval embeddings, probe embeddings, labels per branch, keys)."""
        keys = [k for r in rows for k in r["keys"]]
        branches = sorted({b for r in rows for b in r["emb"]})
        n_rows = [len(r["keys"]) for r in rows]
        ret, probe, labels = {}, {}, {}
        for b in branches:
            parts = [r["emb"].get(b) for r in rows]
            if any(p is None for p in parts):  # a batch without this branch: mark absent
                dims = next(p for p in parts if p is not None)
                parts = [p if p is not None else (dims[0].new_zeros(n, dims[0].shape[1]),
                                                  dims[1].new_zeros(n, dims[1].shape[1]),
                                                  torch.zeros(n, dtype=torch.bool))
                         for p, n in zip(parts, n_rows)]
            ret[b] = (torch.cat([p[0] for p in parts]), torch.cat([p[2] for p in parts]))
            present = ret[b][1]
            probe[b] = torch.cat([p[1] for p in parts])[present]
            labels[b] = {t: torch.cat([r["labels"][t] if r["labels"] is not None else
                                       torch.full((n,), -1, dtype=torch.long)
                                       for r, n in zip(rows, n_rows)])[present] for t in TASKS}
        return ret, probe, labels, keys

    def on_validation_epoch_end(self) -> None:
        rows = _gather(self._val_rows)
        self._val_rows = []
        if not rows:
            return
        ret, probe, labels, _ = self._collect(rows)
        metrics = self.retrieval_metrics(ret)
        run_probes = (self.probe_enabled and not self.trainer.sanity_checking
                      and self._val_count % max(self.probe_every, 1) == 0)
        if not self.trainer.sanity_checking:
            self._val_count += 1
        if run_probes:
            train = self.train_embeddings()
            if train is not None:
                _, train_probe, train_labels, _ = self._collect(train)
                for name, acc in summarize_probes(train_probe, train_labels, probe, labels,
                                                  self.labels_cfg, self.probe_fit_cfg).items():
                    metrics[f"val/probe/{name}"] = acc
        for name, value in metrics.items():
            self.log(name, value, rank_zero_only=True)
        if self.hparams.log_images and not self.trainer.sanity_checking:
            self._log_images(ret, labels)

    def retrieval_metrics(self, ret: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """R@k of every pair present, both directions and their mean, among ``group_size`` candidates."""
        metrics: dict[str, float] = {}
        for a, b in self.retrieval_pairs:
            if a not in ret or b not in ret:
                continue
            rows = ret[a][1] & ret[b][1]
            if int(rows.sum()) < 2:
                continue
            ea, eb = ret[a][0][rows], ret[b][0][rows]
            ab = grouped_retrieval(ea, eb, self.retrieval_group, self.retrieval_ks, self.retrieval_seed)
            ba = grouped_retrieval(eb, ea, self.retrieval_group, self.retrieval_ks, self.retrieval_seed)
            for k in self.retrieval_ks:
                metrics[f"val/retrieval/{a}->{b}/R@{k}"] = ab[f"R@{k}"]
                metrics[f"val/retrieval/{b}->{a}/R@{k}"] = ba[f"R@{k}"]
                metrics[f"val/retrieval/{a}-{b}/R@{k}"] = 0.5 * (ab[f"R@{k}"] + ba[f"R@{k}"])
            metrics["val/retrieval/candidates"] = ab["candidates"]
        return metrics

    @torch.no_grad()
    def train_embeddings(self) -> Optional[list[dict[str, Any]]]:
        """Rows of the training split (eval mode), or None when there is no datamodule."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_dataloader"):
            log.warning("pose probes skipped: the trainer has no datamodule with a train_dataloader")
            return None
        was_training = self.training
        self.eval()
        rows, seen = [], 0
        try:
            for batch in dm.train_dataloader():
                batch = batch.to(self.device)
                rows.append(self._rows(batch, self(batch, with_chunks=False)))
                seen += len(batch)
                if self.probe_max_train is not None and seen >= int(self.probe_max_train):
                    break
        finally:
            self.train(was_training)
        return _gather(rows)

    # ---------------------------------------------------------------------------- images
    def _image_loggers(self) -> list[Any]:
        from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

        return [lg for lg in self.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]

    def _log_images(self, ret: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                    labels: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        loggers = self._image_loggers()
        if not loggers or not self.trainer.is_global_zero:
            return
        try:
            image = retrieval_figure(ret, labels, self.retrieval_pairs, self.retrieval_group)
        except Exception as err:  # plotting must never stop training
            log.warning("retrieval image not logged: %s", err)
            return
        if image is None:
            return
        from pytorch_lightning.loggers import WandbLogger

        for lg in loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image(key="val/retrieval_matrix", images=[image], step=self.global_step)
            else:
                lg.experiment.add_image("val/retrieval_matrix", image, self.global_step, dataformats="HWC")


def retrieval_figure(ret: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                     labels: Mapping[str, Mapping[str, torch.Tensor]], pairs: Iterable[tuple[str, str]],
                     size: int) -> Optional[Any]:
    """An RGB image (H, W, 3) uint8: cosine matrices of the first ``size`` lines per pair and a
    2-D PCA of each branch's embeddings coloured by left/right; None without a pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch.nn.functional as F

    pairs = [(a, b) for a, b in pairs if a in ret and b in ret]
    if not pairs:
        return None
    fig, axes = plt.subplots(2, max(len(pairs), len(ret)), figsize=(4 * max(len(pairs), len(ret)), 8),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, (a, b) in enumerate(pairs):
        rows = ret[a][1] & ret[b][1]
        ea = F.normalize(ret[a][0][rows][:size].float(), dim=-1)
        eb = F.normalize(ret[b][0][rows][:size].float(), dim=-1)
        ax = axes[0, i]
        ax.set_axis_on()
        ax.imshow((ea @ eb.T).numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"cos {a} (rows) vs {b}")
    for i, (b, (emb, present)) in enumerate(sorted(ret.items())):
        x = emb[present].float()
        if x.shape[0] < 3:
            continue
        x = x - x.mean(0)
        _, _, v = torch.pca_lowrank(x, q=2, center=False)
        xy = (x @ v[:, :2]).numpy()
        lr = labels[b]["left_right_all"].numpy()
        ax = axes[1, i]
        ax.set_axis_on()
        ax.scatter(xy[:, 0], xy[:, 1], c=np.where(lr > 0, "tab:red", "tab:blue"), s=6)
        ax.set_title(f"{b}: PCA (red = right, blue = left)")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _gather(rows: list[Any]) -> list[Any]:
    """All ranks' rows under torch.distributed (every rank gets the union), else ``rows``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, rows)
    return [r for part in everything for r in part]


__all__ = ["PosePretrainModule", "retrieval_figure"]
