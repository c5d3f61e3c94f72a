"""Pose pre-training: the conditioning front end trained contrastively (losses, metrics, logging).

Per batch (a :class:`~isdrama.data.dataset.DramaBatch`), the front end
(:class:`~isdrama.models.conditioning.ConditioningFrontEnd`) gives:

- content: phone tokens (B, L) with ground-truth frame durations -> z_c (B, T, D_c) and the
  log-duration MSE;
- pose: every enabled branch whose input the batch carries (geometric pose (B, T, 9), video
  frames (B, F, 3, H, W), text prompts) -> pooled (B, P) and chunk (B, C, P) embeddings;

and this module adds loss = symmetric InfoNCE over the branch pairs (in-batch negatives, lines of
the same drama up-weighted as hard negatives, near-identical trajectories never used as
negatives) + ``duration_weight`` * duration loss.

Validation logs the loss, cross-modal retrieval R@k for every pair among a fixed number of
candidates, and linear-probe accuracies (left/right, front/back, moving/static, distance) of
every branch: probes are fitted on training-split embeddings and scored on the validation
split (see :mod:`isdrama.lit.probes`). Everything goes through ``self.log`` (every Lightning
logger, W&B included); a W&B / TensorBoard logger also gets a retrieval-matrix + embedding image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch

from isdrama.data.dataset import DramaBatch
from isdrama.lit.conditioning import fit_video_norm, frontend_inputs
from isdrama.lit.optim import configure_adam
from isdrama.lit.probes import TASKS, LabelConfig, ProbeConfig, grouped_retrieval, pose_labels, summarize_probes
from isdrama.models.conditioning import FRONTEND_KEYS, ConditioningFrontEnd, FrontEndConfig, upgrade_state_dict
from isdrama.models.contrastive import MultimodalContrastiveLoss
from isdrama.models.layers import masked_mean
from isdrama.utils.config import build_config, to_plain
from isdrama.utils.distributed import gather_lists

log = logging.getLogger(__name__)

EMBEDDINGS = ("pooled", "z_p")


@dataclass
class ProbeSettings:
    """``model.probes``: linear probes at validation (configs/model/pose_pretrain.yaml).

    enabled; every_n_val: probe every n-th validation; max_train_lines: training lines the
    probes are fitted on (None = all); embedding: ``pooled`` (the contrastive space) or ``z_p``
    (the time-mean of z_p); labels: :class:`LabelConfig`; fit: :class:`ProbeConfig`.
    """

    enabled: bool
    every_n_val: int
    max_train_lines: Optional[int]
    embedding: str
    labels: LabelConfig
    fit: ProbeConfig

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"model.probes.embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")


@dataclass
class RetrievalSettings:
    """``model.retrieval``: group_size (candidates per query), ks, seed (grouping order), pairs
    (the scored branch pairs, whatever the loss uses)."""

    group_size: int
    ks: Sequence[int]
    seed: int
    pairs: Sequence[Sequence[str]]

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        self.pairs = tuple((str(a), str(b)) for a, b in self.pairs)


class PosePretrainModule(pl.LightningModule):
    """The conditioning front end trained contrastively.

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
            training-split statistics, fitted at the start of fit (or from the first batch seen
            when used without a trainer); saved as buffers.
        probes: :class:`ProbeSettings` fields.
        retrieval: :class:`RetrievalSettings` fields.
        log_images: send a retrieval matrix / embedding scatter to image-capable loggers.

    ``content``, ``pose_encoder``, ``feature_cache`` and ``video_feature_norm`` build the front
    end (``self.frontend``); a later stage loads it with ``ConditioningFrontEnd.from_pretrained``.
    """

    def __init__(
        self,
        content: Mapping,
        pose_encoder: Mapping,
        contrastive: Mapping,
        optimizer: Mapping,
        duration_weight: float,
        false_negative_radius_m: Optional[float],
        feature_cache: bool,
        video_feature_norm: bool,
        probes: Mapping,
        retrieval: Mapping,
        log_images: bool,
    ):
        super().__init__()
        hp = {
            "content": to_plain(content),
            "pose_encoder": to_plain(pose_encoder),
            "contrastive": to_plain(contrastive),
            "optimizer": to_plain(optimizer),
            "duration_weight": float(duration_weight),
            "false_negative_radius_m": false_negative_radius_m,
            "feature_cache": bool(feature_cache),
            "video_feature_norm": bool(video_feature_norm),
            "probes": to_plain(probes),
            "retrieval": to_plain(retrieval),
            "log_images": bool(log_images),
        }
        self.save_hyperparameters(hp)
        self.frontend = ConditioningFrontEnd(build_config(FrontEndConfig, {k: hp[k] for k in FRONTEND_KEYS}, "model"))
        self.contrastive = MultimodalContrastiveLoss(**hp["contrastive"])
        self.probes = build_config(ProbeSettings, hp["probes"], "model.probes")
        self.retrieval = build_config(RetrievalSettings, hp["retrieval"], "model.retrieval")
        self._val_rows: list[dict[str, Any]] = []
        self._val_count = 0

    # ---------------------------------------------------------------------------- plumbing
    @property
    def branches(self) -> tuple[str, ...]:
        return self.frontend.branches

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, DramaBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adam(self.parameters(), **self.hparams.optimizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"])

    def on_fit_start(self) -> None:
        self.frontend.clear_feature_cache()
        if self.frontend.video_norm_unfitted:
            dm = getattr(self.trainer, "datamodule", None)
            if dm is not None and hasattr(dm, "train_dataloader"):
                fit_video_norm(self.frontend, dm.train_dataloader(), self.device)

    def forward(self, batch: DramaBatch, with_chunks: bool = True) -> dict[str, Any]:
        """Encode a batch with the front end (its output dict, ``duration_loss`` included)."""
        return self.frontend(**frontend_inputs(batch, with_chunks))

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
        c = self.contrastive(
            out["pooled"],
            present=out["present"],
            chunks=out.get("chunks"),
            chunk_mask=out.get("chunk_mask"),
            groups=batch.drama_ids,
            valid_negatives=self.valid_negatives(batch),
        )
        total = c["loss"] + self.hparams.duration_weight * out["duration_loss"]
        result = {f"contrastive/{k}": v for k, v in c.items() if k != "loss"}
        result.update(loss=total, contrastive=c["loss"], duration=out["duration_loss"])
        return result

    # ---------------------------------------------------------------------------- steps
    def training_step(self, batch: DramaBatch, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        losses = self.losses(batch, out)
        loss = losses["loss"]
        self.log(
            "train/loss", losses.pop("loss").detach(), batch_size=len(batch), on_step=True, on_epoch=True, prog_bar=True
        )
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=len(batch), on_step=True, on_epoch=True
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_rows = []

    def validation_step(self, batch: DramaBatch, batch_idx: int) -> None:
        out = self(batch)
        losses = self.losses(batch, out)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch), on_epoch=True, sync_dist=True)
        self._val_rows.append(self._rows(batch, out))

    def _rows(self, batch: DramaBatch, out: Mapping[str, Any]) -> dict[str, Any]:
        """CPU copies of what the epoch-end metrics need from one batch."""
        emb = {}
        for b, pooled in out["pooled"].items():
            e = pooled if self.probes.embedding == "pooled" else masked_mean(out["z_p"][b], batch.mask)
            emb[b] = (pooled.detach().cpu(), e.detach().cpu(), out["present"][b].detach().cpu())
        labels = None
        if batch.pose is not None:
            lab = pose_labels(batch.pose, batch.mask, self.probes.labels)
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
                parts = [
                    p
                    if p is not None
                    else (
                        dims[0].new_zeros(n, dims[0].shape[1]),
                        dims[1].new_zeros(n, dims[1].shape[1]),
                        torch.zeros(n, dtype=torch.bool),
                    )
                    for p, n in zip(parts, n_rows)
                ]
            ret[b] = (torch.cat([p[0] for p in parts]), torch.cat([p[2] for p in parts]))
            present = ret[b][1]
            probe[b] = torch.cat([p[1] for p in parts])[present]
            labels[b] = {
                t: torch.cat(
                    [
                        r["labels"][t] if r["labels"] is not None else torch.full((n,), -1, dtype=torch.long)
                        for r, n in zip(rows, n_rows)
                    ]
                )[present]
                for t in TASKS
            }
        return ret, probe, labels, keys

    def on_validation_epoch_end(self) -> None:
        rows = gather_lists(self._val_rows)
        self._val_rows = []
        if not rows:
            return
        ret, probe, labels, _ = self._collect(rows)
        metrics = self.retrieval_metrics(ret)
        run_probes = (
            self.probes.enabled
            and not self.trainer.sanity_checking
            and self._val_count % max(self.probes.every_n_val, 1) == 0
        )
        if not self.trainer.sanity_checking:
            self._val_count += 1
        if run_probes:
            train = self.train_embeddings()
            if train is not None:
                _, train_probe, train_labels, _ = self._collect(train)
                for name, acc in summarize_probes(
                    train_probe, train_labels, probe, labels, self.probes.labels, self.probes.fit
                ).items():
                    metrics[f"val/probe/{name}"] = acc
        for name, value in metrics.items():
            self.log(name, value, rank_zero_only=True)
        if self.hparams.log_images and not self.trainer.sanity_checking:
            self._log_images(ret, labels)

    def retrieval_metrics(self, ret: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """R@k of every pair present, both directions and their mean, among ``group_size`` candidates."""
        metrics: dict[str, float] = {}
        r = self.retrieval
        for a, b in r.pairs:
            if a not in ret or b not in ret:
                continue
            rows = ret[a][1] & ret[b][1]
            if int(rows.sum()) < 2:
                continue
            ea, eb = ret[a][0][rows], ret[b][0][rows]
            ab = grouped_retrieval(ea, eb, r.group_size, r.ks, r.seed)
            ba = grouped_retrieval(eb, ea, r.group_size, r.ks, r.seed)
            for k in r.ks:
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
                if self.probes.max_train_lines is not None and seen >= int(self.probes.max_train_lines):
                    break
        finally:
            self.train(was_training)
        return gather_lists(rows)

    # ---------------------------------------------------------------------------- images
    def _image_loggers(self) -> list[Any]:
        from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

        return [lg for lg in self.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]

    def _log_images(
        self, ret: Mapping[str, tuple[torch.Tensor, torch.Tensor]], labels: Mapping[str, Mapping[str, torch.Tensor]]
    ) -> None:
        loggers = self._image_loggers()
        if not loggers or not self.trainer.is_global_zero:
            return
        try:
            image = retrieval_figure(ret, labels, self.retrieval.pairs, self.retrieval.group_size)
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


def retrieval_figure(
    ret: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    labels: Mapping[str, Mapping[str, torch.Tensor]],
    pairs: Iterable[tuple[str, str]],
    size: int,
) -> Optional[Any]:
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
    fig, axes = plt.subplots(2, max(len(pairs), len(ret)), figsize=(4 * max(len(pairs), len(ret)), 8), squeeze=False)
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


__all__ = ["PosePretrainModule", "retrieval_figure"]
