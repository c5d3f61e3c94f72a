"""The drama stage: the Immersive Drama Transformer trained by rectified flow on binaural codec
latents (``python train.py experiment=drama_demo | drama``).

:class:`DramaModule` holds ``net`` = the conditioning front end (from a pose-pretrain checkpoint
or fresh; frozen or fine-tuned) + the flow core (:class:`~isdrama.flow.RectifiedFlow` around
:class:`~isdrama.models.drama_transformer.DramaTransformer`), its EMA copy (``ema-pytorch``; used
for validation, export and inference), and the codec of the data module's token cache (not
trained, not in the state dict).

Training step, per line (probabilities from ``model.prompt``): with p = ``other_line`` the
prompt is another line of the same speaker (the data module's speaker prompt), with p = ``drop``
no prompt (the unconditional branch of guidance; with ``content_drop`` of those also no content,
as F5-TTS drops the text with the audio), else the line's own first 10-30 % frames are
the prompt and the rest is generated (F5-TTS-style infilling as a prefix). Losses: flow (MSE of
the velocity on generated frames) + pitch (F0 head) + balance (Switch, per routed group) +
prior (the content prior's latent MSE, when the transformer has one) + duration (only when the
content path trains), weights in ``model.losses``. The transformer's content input is z_c with
each frame's place in its token and word (``model.content_position``, :meth:`DramaModule.transformer_content`).

Determinism: every training step reseeds torch's RNG from (seed, rank, global step), so a resumed
run draws the same prompts, noise, times and Gumbel noise as an uninterrupted one; the batch
sampler is positioned at the restored step (:func:`isdrama.lit.resume.skip_consumed_batches`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from ema_pytorch import EMA
from torch import nn

from isdrama.callbacks.generation import GeneratedAudio
from isdrama.data.dataset import DramaBatch
from isdrama.data.text_tokenizer import Vocabulary
from isdrama.flow import FlowConfig, RectifiedFlow, masked_mse
from isdrama.inference.line_generator import Guidance, decode_latents, sample_latents
from isdrama.lit.conditioning import fit_video_norm, frontend_inputs
from isdrama.lit.optim import configure_adam
from isdrama.models.blocks.f0_head import f0_loss
from isdrama.models.conditioning import ConditioningFrontEnd, FrontEndConfig
from isdrama.models.content import POSITION_FEATURES, frame_position_features, word_frames_of_tokens
from isdrama.models.drama_transformer import DramaTransformer, DramaTransformerConfig
from isdrama.models.pose_encoder import sample_pose_branches, select_pose_branches
from isdrama.utils.config import build_config, to_plain

log = logging.getLogger(__name__)

SCENE_SOURCES = ("none", "video", "text")
#: the format tag of :meth:`DramaModule.export` files
EXPORT_FORMAT = "isdrama-drama-v1"
#: DramaModule's constructor arguments (its hyper-parameters, configs/model/drama.yaml)
DRAMA_HPARAMS = (
    "frontend",
    "content",
    "pose_encoder",
    "feature_cache",
    "video_feature_norm",
    "transformer",
    "flow",
    "optimizer",
    "losses",
    "prompt",
    "routing",
    "ema",
    "scene",
    "statistics",
    "validation",
    "latent_dim",
    "seed",
    "pose",
    "content_position",
)
#: constructor arguments newer than some exports and checkpoints: optional, their None builds such a
#: file's model as it was trained (see also :func:`upgrade_hparams` for nested keys)
LEGACY_HPARAMS = ("pose", "content_position")


def upgrade_hparams(hp: Mapping[str, Any]) -> dict[str, Any]:
    """An export's or checkpoint's drama hyper-parameters with the keys added since it was written
    filled in as that model was built: no content prior (``transformer.prior``, ``losses.prior``), no
    content dropping (``prompt.content_drop``, ``flow.content_guidance_scale``), full self-attention
    (``transformer.attention.window``); ``pose`` and
    ``content_position`` are optional constructor arguments for the same reason."""
    hp = dict(hp)
    transformer = dict(hp["transformer"])
    transformer.setdefault("prior", {"enabled": False, "blocks": 0, "kernel": 1})
    transformer["attention"] = {"window": None, **dict(transformer["attention"])}
    hp["transformer"] = transformer
    hp["losses"] = {"prior": 0.0, **dict(hp["losses"])}
    hp["prompt"] = {"content_drop": 0.0, "drop_pose_with_content": False, **dict(hp["prompt"])}
    hp["flow"] = {"content_guidance_scale": None, **dict(hp["flow"])}
    return hp


@dataclass
class PromptConfig:
    """Speaker prompts in training: ``other_line`` / ``drop`` probabilities (the rest: the line's own
    prefix of ``prefix_fraction`` [lo, hi] of its frames, at most ``max_frames``). ``content_drop``:
    the share of the prompt-dropped lines whose content is dropped too (z_c and its position features
    zeroed); when > 0, guidance's unconditional branch has neither prompt nor content.
    ``drop_pose_with_content``: those lines lose their pose too (z_p zeroed), and the unconditional
    branch has no condition at all, so guidance amplifies the pose as well."""

    other_line: float
    drop: float
    prefix_fraction: list[float]
    max_frames: int
    content_drop: float
    drop_pose_with_content: bool

    def __post_init__(self) -> None:
        for name in ("other_line", "drop", "content_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"model.prompt.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.other_line + self.drop > 1.0:
            raise ValueError(
                f"model.prompt.other_line + model.prompt.drop must be <= 1, got {self.other_line} + {self.drop}"
            )


@dataclass
class PoseBranchConfig:
    """Which pose branches make z_p in training: per line, with p = ``single_branch`` one of the
    line's present branches (uniform), else the mean over all present (the paper's fusion).
    Inference asks for one branch per line (the script's pose kind), so this trains that case."""

    single_branch: float


@dataclass
class LossWeights:
    flow: float
    pitch: float
    balance: float
    duration: float
    prior: float


@dataclass
class RoutingSchedule:
    """Gumbel-softmax temperature: ``start`` -> ``end`` geometrically over ``anneal_steps``."""

    start: float
    end: float
    anneal_steps: int

    def temperature(self, step: int) -> float:
        if self.anneal_steps <= 0:
            return self.end
        progress = min(1.0, step / self.anneal_steps)
        return self.start * (self.end / self.start) ** progress


@dataclass
class EMAConfig:
    beta: float
    update_after_step: int
    update_every: int


@dataclass
class ValidationConfig:
    """Generation in validation: Euler ``steps``, CFG ``guidance_scale`` (the prompt vs no prompt),
    noise ``seed``."""

    steps: int
    guidance_scale: float
    seed: int


def shift_frames(x: torch.Tensor, offset: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) shifted left by offset (B,) frames per line; positions outside ``new_mask`` are 0."""
    T = x.shape[1]
    idx = (torch.arange(T, device=x.device)[None] + offset[:, None]).clamp(max=T - 1)
    out = x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x))
    return out * new_mask.view(*new_mask.shape, *([1] * (x.dim() - 2))).to(out.dtype)


def prompt_choices(
    has_other: torch.Tensor, cfg: PromptConfig, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each training line's prompt choice (``has_other`` (B,): the line has another line of its
    speaker): (B,) masks ``use_other`` (that line is the prompt), ``drop`` (no prompt) and
    ``drop_content`` (no prompt and no content; a subset of ``drop``). The rest take their own
    prefix. Draws from ``generator`` on the CPU (a second draw only when ``cfg.content_drop`` > 0)."""
    B = has_other.shape[0]
    u = torch.rand(B, generator=generator).to(has_other.device)
    use_other = (u < cfg.other_line) & has_other
    drop = (u >= cfg.other_line) & (u < cfg.other_line + cfg.drop)
    drop_content = torch.zeros_like(drop)
    if cfg.content_drop > 0:
        drop_content = drop & (torch.rand(B, generator=generator).to(has_other.device) < cfg.content_drop)
    return use_other, drop, drop_content


class PicklableEMA(EMA):
    """ema-pytorch's EMA of a module. Its ``__new__`` wants the model, which unpickling (the DDP
    spawn launcher pickles the LightningModule) does not pass; this one takes it optionally."""

    def __new__(cls, model: Optional[nn.Module] = None, *args: Any, **kwargs: Any) -> "PicklableEMA":
        return nn.Module.__new__(cls)


class DramaNet(nn.Module):
    """Front end + flow core: what the optimiser trains and EMA averages."""

    def __init__(self, frontend: ConditioningFrontEnd, flow: RectifiedFlow):
        super().__init__()
        self.frontend = frontend
        self.flow = flow

    @property
    def transformer(self) -> DramaTransformer:
        return self.flow.estimator


class DramaModule(pl.LightningModule):
    """The drama stage (see module docstring). Config: configs/model/drama.yaml."""

    def __init__(
        self,
        frontend: Mapping[str, Any],
        content: Mapping[str, Any],
        pose_encoder: Mapping[str, Any],
        feature_cache: bool,
        video_feature_norm: bool,
        transformer: Mapping[str, Any],
        flow: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        losses: Mapping[str, Any],
        prompt: Mapping[str, Any],
        routing: Mapping[str, Any],
        ema: Mapping[str, Any],
        scene: Mapping[str, Any],
        statistics: Mapping[str, Any],
        validation: Mapping[str, Any],
        latent_dim: int,
        seed: int,
        pose: Optional[Mapping[str, Any]] = None,
        content_position: Optional[bool] = None,
    ):
        super().__init__()
        # plain containers: a checkpoint then loads with torch.load(weights_only=True)
        args = dict(locals())
        self.save_hyperparameters({k: to_plain(args[k]) for k in DRAMA_HPARAMS})
        self.frontend_cfg = to_plain(dict(frontend))
        self.prompt_cfg = build_config(PromptConfig, prompt, "model.prompt")
        # None only for exports written before model.pose existed: the fusion of every branch
        self.pose_cfg = build_config(
            PoseBranchConfig, pose if pose is not None else {"single_branch": 0.0}, "model.pose"
        )
        self.loss_w = build_config(LossWeights, losses, "model.losses")
        self.routing = build_config(RoutingSchedule, routing, "model.routing")
        self.ema_cfg = build_config(EMAConfig, ema, "model.ema")
        self.val_cfg = build_config(ValidationConfig, validation, "model.validation")
        # None only for exports written before model.content_position existed: z_c alone
        self.content_position = bool(content_position)
        self.scene_source = to_plain(dict(scene))["source"]
        if self.scene_source not in SCENE_SOURCES:
            raise ValueError(f"model.scene.source must be one of {SCENE_SOURCES}, got {self.scene_source!r}")
        self.stats_max_batches = int(to_plain(dict(statistics))["max_batches"])
        self.seed = int(seed)
        self.optimizer_cfg = to_plain(dict(optimizer))

        pretrained = self.frontend_cfg.get("checkpoint")
        if pretrained:
            front = ConditioningFrontEnd.from_pretrained(pretrained)
            log.info("front end loaded from %s", pretrained)
        else:
            # model.frontend.vocabulary: only in resolved hyper-parameters (exports, see
            # resolved_hparams), the content vocabulary of a pre-trained front end
            tokens = self.frontend_cfg.get("vocabulary")
            front = ConditioningFrontEnd(
                build_config(
                    FrontEndConfig,
                    {
                        "content": content,
                        "pose_encoder": pose_encoder,
                        "feature_cache": feature_cache,
                        "video_feature_norm": video_feature_norm,
                    },
                    "model",
                ),
                vocab=Vocabulary(tokens) if tokens else None,
            )
        self.frontend_frozen = bool(self.frontend_cfg["freeze"])
        if self.frontend_frozen:
            front.requires_grad_(False)
        scene_dim = 1  # "none": only the learned null scene is used
        if self.scene_source == "video":
            scene_dim = front.pose_encoder.video_encoder.dim
        elif self.scene_source == "text":
            scene_dim = front.pose_encoder.text_encoder.dim
        tcfg = build_config(
            DramaTransformerConfig,
            transformer,
            "model.transformer",
            latent_dim=int(latent_dim),
            content_dim=front.config.content.d_model + (POSITION_FEATURES if self.content_position else 0),
            pose_dim=front.pose_encoder.config.d_model,
            scene_dim=scene_dim,
        )
        flow_core = RectifiedFlow(DramaTransformer(tcfg), int(latent_dim), build_config(FlowConfig, flow, "model.flow"))
        self.net = DramaNet(front, flow_core)
        # parameters this stage never uses stay out of the optimiser (and out of DDP's reducer):
        # the pose encoder's contrastive heads (pose pre-training only) and, without a scene, the
        # scene projection
        front.pose_encoder.heads.requires_grad_(False)
        if self.scene_source == "none":
            flow_core.estimator.scene_in.requires_grad_(False)
        self.ema = PicklableEMA(
            self.net,
            beta=self.ema_cfg.beta,
            update_after_step=self.ema_cfg.update_after_step,
            update_every=self.ema_cfg.update_every,
            include_online_model=False,
        )
        self.register_buffer("routing_temperature", torch.tensor(self.routing.start))
        #: what inference must feed the front end as training did (set from the data module in setup)
        self.inputs: dict[str, Any] = {}
        object.__setattr__(self, "_codec", None)  # the data module's codec (set in setup; not in the state dict)

    # ------------------------------------------------------------------ plumbing
    @property
    def codec(self):
        if self._codec is None:
            raise RuntimeError(
                "the drama stage has no codec: it takes the data module's (trainer.fit(..., datamodule=...)) "
                "or one given with set_codec(codec)"
            )
        return self._codec

    def set_codec(self, codec) -> None:
        """Use ``codec`` (a BinauralCodec) for tokens <-> latents <-> audio."""
        codec.requires_grad_(False)
        codec.eval()
        object.__setattr__(self, "_codec", codec.to(self.device))  # not a submodule: not in the state dict

    @property
    def uncond_drops_content(self) -> bool:
        """Whether guidance's unconditional branch drops the content with the prompt (the model was
        trained so: ``model.prompt.content_drop`` > 0)."""
        return self.prompt_cfg.content_drop > 0

    @property
    def uncond_drops_pose(self) -> bool:
        """Whether that branch drops the pose too (``model.prompt.drop_pose_with_content``)."""
        return self.uncond_drops_content and self.prompt_cfg.drop_pose_with_content

    @property
    def ema_net(self) -> DramaNet:
        return self.ema.ema_model

    def setup(self, stage: Optional[str] = None) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._codec is None and dm is not None:
            if dm.token_loader is None or getattr(dm.token_loader, "codec", None) is None:
                raise ValueError("the drama stage needs codec tokens: set data.items.load_tokens=true")
            self.set_codec(dm.token_loader.codec)
        if dm is not None and getattr(dm, "config", None) is not None:
            items = dm.config.items
            self.inputs = {"video_fps": float(items.video_fps), "video_size": [int(v) for v in items.video_size]}
        if self._codec is not None and int(self.hparams.latent_dim) != self._codec.latent_dim:
            raise ValueError(
                f"model.latent_dim={self.hparams.latent_dim} but the codec's binaural latent has "
                f"{self._codec.latent_dim} channels; set model.latent_dim"
            )

    def on_fit_start(self) -> None:
        if self._codec is not None:
            self._codec.to(self.device)
        flow = self.net.flow
        if not bool(flow.statistics_fitted):
            self._fit_latent_statistics()
        front = self.net.frontend
        if front.video_norm_unfitted:
            fit_video_norm(front, self.trainer.datamodule.train_dataloader(), self.device)
        self._sync_ema_buffers()

    def _sync_ema_buffers(self) -> None:
        """Copy the fitted statistics (and every buffer) into the EMA copy."""
        for (name, b_ema), (_, b) in zip(self.ema_net.named_buffers(), self.net.named_buffers()):
            b_ema.data.copy_(b.data)

    @torch.no_grad()
    def _fit_latent_statistics(self) -> None:
        """Per-channel mean / std of the training latents (``model.statistics.max_batches`` batches
        per rank, summed over ranks)."""
        C = int(self.hparams.latent_dim)
        total = torch.zeros(C, dtype=torch.float64, device=self.device)
        total_sq = torch.zeros_like(total)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, batch in enumerate(self.trainer.datamodule.train_dataloader()):
            if i >= self.stats_max_batches:
                break
            batch = batch.to(self.device)
            x = self.latents(batch.tokens)[batch.mask].double()
            total += x.sum(0)
            total_sq += (x**2).sum(0)
            count += x.shape[0]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (total, total_sq, count):
                torch.distributed.all_reduce(t)
        self.net.flow.fit_statistics(total, total_sq, float(count))
        log.info(
            "latent statistics from %d frames: mean |mu| %.3g, mean std %.3g",
            int(count),
            float(self.net.flow.latent_mean.abs().mean()),
            float(self.net.flow.latent_std.mean()),
        )

    def latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 2, n_q, T) -> raw binaural latents (B, T, C)."""
        return self.codec.tokens_to_latent(tokens).transpose(1, 2).float()

    # ------------------------------------------------------------------ conditioning
    def scene_features(self, net: DramaNet, batch: DramaBatch) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(B, S, D_s) scene tokens of the configured source, or (None, None)."""
        front = net.frontend
        if self.scene_source == "video" and batch.video is not None:
            feats = front.video_features(batch.video, batch.video_mask, list(batch.keys))
            return feats, batch.video_mask
        if self.scene_source == "text":
            texts = [None if s < 0 else f"scene {s}" for s in batch.scene_ids.tolist()]
            if any(texts):
                return front.text_features(texts, self.device)
        return None, None

    def condition(self, net: DramaNet, batch: DramaBatch) -> dict[str, Any]:
        """The front end's output for a batch (ground-truth durations)."""
        grad = torch.is_grad_enabled() and not self.frontend_frozen
        with torch.set_grad_enabled(grad):
            return net.frontend(**frontend_inputs(batch, with_chunks=False))

    def transformer_content(
        self, net: DramaNet, front_out: Mapping[str, Any], words: Sequence[Sequence[str]]
    ) -> torch.Tensor:
        """The transformer's content input (B, T, D_c [+ 6]): the front end's z_c, with each frame's
        place in its token and its word (:func:`~isdrama.models.content.frame_position_features`)
        appended when ``model.content_position`` is on. ``words``: each line's words, whose
        ``PhoneTokenizer.position_spans`` give each token's word span; a span's frames are the front
        end's token ``durations`` summed over it, in training and inference alike."""
        z_c = front_out["z_c"]
        if not self.content_position:
            return z_c
        tokenizer = net.frontend.content.tokenizer
        spans = [tokenizer.position_spans(w) for w in words]
        durations = front_out["durations"]
        if len(spans) != durations.shape[0] or any(len(s) > durations.shape[1] for s in spans):
            raise ValueError(
                f"position spans for {[len(s) for s in spans]} tokens, but the lines have {durations.shape[1]} "
                f"token slots ({durations.shape[0]} lines)"
            )
        index = torch.zeros(durations.shape, dtype=torch.long, device=durations.device)
        for i, s in enumerate(spans):
            index[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        word_frames = word_frames_of_tokens(durations, index)
        position = frame_position_features(durations, word_frames, z_c.shape[1])
        return torch.cat([z_c, position.to(z_c.dtype)], dim=-1)

    def batch_prompts(self, batch: DramaBatch, flow: RectifiedFlow) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's speaker prompts as standardised latents (B, P, C) and mask (B, P), P >= 1."""
        B, C = len(batch), int(self.hparams.latent_dim)
        if batch.prompt_tokens is None or batch.prompt_tokens.shape[-1] == 0:
            return torch.zeros(B, 1, C, device=self.device), torch.zeros(B, 1, dtype=torch.bool, device=self.device)
        x = flow.normalize(self.latents(batch.prompt_tokens)) * batch.prompt_mask.unsqueeze(-1)
        return x, batch.prompt_mask

    # ------------------------------------------------------------------ training
    def _step_seed(self) -> int:
        return (self.seed * 1_000_003 + self.global_step * 7919 + self.global_rank) % (2**63 - 1)

    def assemble(
        self,
        batch: DramaBatch,
        net: DramaNet,
        generator: Optional[torch.Generator],
        train: bool,
        pose_branches: Optional[Sequence[str]] = None,
    ) -> dict[str, Any]:
        """Targets and conditions of a batch with per-line prompt and pose-branch choices (train)
        or the batch's prompts (eval; z_p from ``pose_branches`` only when given, else every
        present branch). Returns x1 (B, T, C) standardised, frame_mask, cond (estimator
        keywords), f0 / f0_voiced targets (shifted like x1) and the front end's output."""
        flow = net.flow
        front_out = self.condition(net, batch)
        x1 = flow.normalize(self.latents(batch.tokens))
        mask = batch.mask
        z_c = self.transformer_content(net, front_out, batch.words)
        if train:
            z_p = sample_pose_branches(front_out, self.pose_cfg.single_branch, generator)
        else:
            z_p = select_pose_branches(front_out, pose_branches)
        prompt, prompt_mask = self.batch_prompts(batch, flow)
        f0, voiced = batch.f0, batch.f0_voiced
        if train:
            B, T = mask.shape
            cfg = self.prompt_cfg
            use_other, drop, drop_content = prompt_choices(prompt_mask.any(dim=1), cfg, generator)
            own = ~use_other & ~drop
            z_c = z_c * ~drop_content[:, None, None]
            if cfg.drop_pose_with_content:
                z_p = z_p * ~drop_content[:, None, None]
            lengths = mask.sum(dim=1)
            lo, hi = cfg.prefix_fraction
            frac = lo + (hi - lo) * torch.rand(B, generator=generator, device="cpu").to(self.device)
            k = torch.minimum((frac * lengths).long(), torch.full_like(lengths, cfg.max_frames))
            k = torch.where(own & (lengths >= 4), k.clamp(min=1), torch.zeros_like(k))
            P = max(int(k.max()), prompt.shape[1])
            ar = torch.arange(P, device=self.device)[None]
            own_prompt = torch.nn.functional.pad(x1, (0, 0, 0, max(0, P - x1.shape[1])))[:, :P]
            own_mask = ar < k[:, None]
            other = torch.nn.functional.pad(prompt, (0, 0, 0, P - prompt.shape[1]))
            other_mask = torch.nn.functional.pad(prompt_mask, (0, P - prompt_mask.shape[1]))
            prompt = torch.where(
                own[:, None, None], own_prompt * own_mask.unsqueeze(-1), other * use_other[:, None, None]
            )
            prompt_mask = torch.where(own[:, None], own_mask, other_mask & use_other[:, None])
            new_mask = torch.arange(T, device=self.device)[None] < (lengths - k)[:, None]
            x1, z_c, z_p = (shift_frames(v, k, new_mask) for v in (x1, z_c, z_p))
            if f0 is not None:
                f0, voiced = shift_frames(f0, k, new_mask), shift_frames(voiced, k, new_mask)
            mask = new_mask
        scene, scene_mask = self.scene_features(net, batch)
        cond = {
            "z_c": z_c,
            "z_p": z_p,
            "prompt": prompt,
            "prompt_mask": prompt_mask,
            "scene": scene,
            "scene_mask": scene_mask,
            "temperature": float(self.routing_temperature),
        }
        return {"x1": x1, "mask": mask, "cond": cond, "f0": f0, "f0_voiced": voiced, "front": front_out}

    def compute_losses(self, net: DramaNet, batch: DramaBatch, train: bool, generator: Optional[torch.Generator]):
        parts = self.assemble(batch, net, generator, train)
        res = net.flow.loss(parts["x1"], parts["mask"], parts["cond"], generator=generator)
        out = res["out"]
        losses = {"flow": res["loss"]}
        total = self.loss_w.flow * res["loss"]
        if out["f0"] is not None and parts["f0"] is not None:
            ref = math.log(net.transformer.config.f0_ref_hz)
            log_f0 = torch.where(parts["f0_voiced"], parts["f0"] - ref, torch.zeros_like(parts["f0"]))
            losses["pitch"] = f0_loss(out["f0"], log_f0, parts["f0_voiced"], parts["mask"])
            total = total + self.loss_w.pitch * losses["pitch"]
        if out.get("prior") is not None:
            losses["prior"] = masked_mse(out["prior"], parts["x1"], parts["mask"])
            total = total + self.loss_w.prior * losses["prior"]
        balances = [g["balance"] for block in out["routing"] for g in block.values()]
        if balances:
            losses["balance"] = torch.stack(balances).mean()
            total = total + self.loss_w.balance * losses["balance"]
        if not self.frontend_frozen and "duration_loss" in parts["front"]:
            losses["duration"] = parts["front"]["duration_loss"]
            total = total + self.loss_w.duration * losses["duration"]
        losses["total"] = total
        return losses, out

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.routing_temperature.fill_(self.routing.temperature(self.global_step))

    def training_step(self, batch: DramaBatch, batch_idx: int) -> torch.Tensor:
        torch.manual_seed(self._step_seed())
        gen = torch.Generator().manual_seed(self._step_seed())
        losses, out = self.compute_losses(self.net, batch, train=True, generator=gen)
        B = len(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name in ("total", "flow"), batch_size=B)
        self.log("train/routing_temperature", self.routing_temperature, batch_size=B)
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            for key, value in routing_summary(out["routing"], out["packed_mask"]).items():
                self.log(f"train/{key}", value, batch_size=B)
        return losses["total"]

    def on_before_zero_grad(self, optimizer: Any) -> None:
        self.ema.update()

    def validation_step(self, batch: DramaBatch, batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(self.val_cfg.seed + batch_idx)
        torch.manual_seed(self.val_cfg.seed + batch_idx)
        losses, out = self.compute_losses(self.ema_net, batch, train=False, generator=gen)
        B = len(batch)
        for name, value in losses.items():
            self.log(f"val/{name}", value, batch_size=B, sync_dist=True)
        for key, value in routing_summary(out["routing"], out["packed_mask"]).items():
            self.log(f"val/{key}", value, batch_size=B, sync_dist=True)

    def configure_optimizers(self):
        return configure_adam(self.net.parameters(), **self.optimizer_cfg)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_latents(
        self,
        batch: DramaBatch,
        net: Optional[DramaNet] = None,
        guidance_scale: Optional[float] = None,
        steps: Optional[int] = None,
        seed: Optional[int] = None,
        pose_branches: Optional[Sequence[str]] = None,
        drop_content: Optional[bool] = None,
        content_guidance_scale: Optional[float] = None,
    ) -> torch.Tensor:
        """Raw binaural latents (B, T, C) of a batch's lines (ground-truth durations, the batch's
        prompts, CFG against no prompt, and no content when ``drop_content`` (default: the model's
        :attr:`uncond_drops_content`) with the content's scale ``content_guidance_scale`` (default:
        ``model.flow.content_guidance_scale``); EMA weights by default; z_p from ``pose_branches``
        only when given)."""
        net = self.ema_net if net is None else net
        parts = self.assemble(batch, net, None, train=False, pose_branches=pose_branches)
        g = self.val_cfg.guidance_scale if guidance_scale is None else guidance_scale
        drop_content = self.uncond_drops_content if drop_content is None else drop_content
        g_c = net.flow.config.content_guidance_scale if content_guidance_scale is None else content_guidance_scale
        guidance = Guidance(steps=steps or self.val_cfg.steps, scale=g, alpha=1.0, content_scale=g_c)
        seed = self.val_cfg.seed if seed is None else seed
        return sample_latents(
            net.flow,
            parts["mask"],
            parts["cond"],
            guidance,
            seed,
            drop_content=drop_content,
            drop_pose=self.uncond_drops_pose,
        )

    @torch.no_grad()
    def generate_validation_audio(self, batch: DramaBatch) -> GeneratedAudio:
        """Generated binaural audio of a validation batch with its codec-decoded ground truth and prompts."""
        codec = self.codec
        wav = decode_latents(codec, self.generate_latents(batch))
        hop = codec.hop_length
        lengths = batch.frames * hop
        gt = codec.decode(batch.tokens)
        prompt_wav, prompt_lengths = None, None
        if batch.prompt_tokens is not None and batch.prompt_tokens.shape[-1] > 0:
            prompt_wav = codec.decode(batch.prompt_tokens)
            prompt_lengths = batch.prompt_mask.sum(dim=1) * hop
        texts = list(batch.texts)
        return GeneratedAudio(
            wav=wav,
            lengths=lengths,
            sample_rate=codec.sample_rate,
            names=list(batch.keys),
            gt_wav=gt,
            gt_lengths=lengths,
            prompt_wav=prompt_wav,
            prompt_lengths=prompt_lengths,
            texts=texts,
        )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._codec is not None:
            checkpoint["codec"] = self.codec_identity()
        checkpoint["inputs"] = dict(self.inputs)
        checkpoint["resolved_hyper_parameters"] = self.resolved_hparams()

    def resolved_hparams(self) -> dict[str, Any]:
        """Hyper-parameters that rebuild this module from its state dict alone: a front end loaded
        from a pose-pretrain checkpoint is described by its own config and vocabulary instead of
        the file's path (``model.frontend.checkpoint`` -> null), so an export loads anywhere."""
        from dataclasses import asdict

        hp = dict(self.hparams)
        front = self.net.frontend
        hp["frontend"] = {**dict(hp["frontend"]), "checkpoint": None, "vocabulary": list(front.content.vocab.tokens)}
        hp["content"] = to_plain(asdict(front.config.content))
        hp["pose_encoder"] = to_plain(asdict(front.config.pose_encoder))
        hp["feature_cache"] = bool(front.config.feature_cache)
        hp["video_feature_norm"] = bool(front.config.video_feature_norm)
        return hp

    def codec_identity(self) -> dict[str, Any]:
        return {"config_key": self.codec.config_key(), "weights": self.codec.weights_source}

    def export(self, path) -> Path:
        """Write the EMA weights (front end + flow core) with the hyper-parameters and the codec's
        identity to ``path`` atomically (what inference loads, :meth:`from_export`)."""
        from isdrama.utils.io import atomic_path

        payload = {
            "format": EXPORT_FORMAT,
            "hyper_parameters": self.resolved_hparams(),
            "state_dict": {
                k: v.detach().cpu() if isinstance(v, torch.Tensor) else v  # the vocabulary is extra state
                for k, v in self.ema_net.state_dict().items()
            },
            "codec": self.codec_identity() if self._codec is not None else None,
            "inputs": dict(self.inputs),
            "global_step": int(self.global_step) if self._trainer is not None else 0,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def from_export(cls, path, map_location: Any = "cpu") -> "DramaModule":
        """A module (eval mode) whose online and EMA weights are an export's EMA weights."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, Mapping) or payload.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: not a drama-stage export (format {EXPORT_FORMAT!r}, see DramaModule.export)")
        module = cls(**upgrade_hparams(payload["hyper_parameters"]))
        module.net.load_state_dict(payload["state_dict"])
        module.ema_net.load_state_dict(payload["state_dict"])
        module.inputs = dict(payload.get("inputs") or {})
        return module.eval()

    @classmethod
    def load_for_inference(cls, path, map_location: Any = "cpu") -> tuple["DramaModule", dict[str, Any]]:
        """(module in eval mode with its EMA weights as the online ones, the file's metadata:
        ``codec``, ``inputs``, ``global_step``) from an export (:meth:`export`) or a drama-stage
        Lightning checkpoint."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: drama model not found")
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if isinstance(payload, Mapping) and payload.get("format") == EXPORT_FORMAT:
            module = cls.from_export(path, map_location)
        elif isinstance(payload, Mapping) and "state_dict" in payload and "hyper_parameters" in payload:
            hp = payload.get("resolved_hyper_parameters") or payload["hyper_parameters"]
            if not all(k in hp for k in DRAMA_HPARAMS if k not in LEGACY_HPARAMS):
                raise ValueError(
                    f"{path}: a Lightning checkpoint, but not of the drama stage (hyper_parameters {sorted(hp)})"
                )
            module = cls(**upgrade_hparams({k: hp[k] for k in DRAMA_HPARAMS if k in hp}))
            prefix = "ema.ema_model."
            ema = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
            if not ema:
                raise ValueError(f"{path}: the checkpoint holds no EMA weights ({prefix}*)")
            module.net.load_state_dict(ema)
            module.ema_net.load_state_dict(ema)
            module.routing_temperature.copy_(payload["state_dict"]["routing_temperature"])
            module.inputs = dict(payload.get("inputs") or {})
            module.eval()
        else:
            raise ValueError(f"{path}: neither a drama export ({EXPORT_FORMAT}) nor a drama-stage checkpoint")
        meta = {k: payload.get(k) for k in ("codec", "inputs", "global_step")}
        return module, meta


def routing_summary(routing: list[dict[str, dict[str, torch.Tensor]]], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expert usage (share of valid frames whose top-1 is each expert) and mean routing entropy
    per block and group: keys ``routing/b{i}_{group}_usage{e}``, ``routing/b{i}_{group}_entropy``."""
    out: dict[str, torch.Tensor] = {}
    for i, block in enumerate(routing):
        for group, stats in block.items():
            probs, choice = stats["probs"], stats["choice"]
            n = probs.shape[-1]
            valid = mask.reshape(-1)
            usage = torch.nn.functional.one_hot(choice.reshape(-1)[valid], n).float().mean(0)
            for e in range(n):
                out[f"routing/b{i}_{group}_usage{e}"] = usage[e]
            p = probs.reshape(-1, n)[valid].clamp_min(1e-12)
            out[f"routing/b{i}_{group}_entropy"] = -(p * p.log()).sum(-1).mean()
    return out


__all__ = ["DramaModule", "DramaNet", "routing_summary", "shift_frames"]
