"""The codec training stage: EnCodec's encoder + RVQ and a SEANet or Vocos decoder, per ear.

``python train.py experiment=codec_demo`` (configs/model/codec.yaml). Each ear is a mono signal
through one shared codec (the project's 24 kHz binaural layout); the interaural cue loss ties the
two reconstructed ears together.

Losses (weights in ``model.losses``): multi-resolution log-mel L1, waveform L1, RVQ commitment,
an optional latent mel target (a 3-tap convolution from the encoder's latent must predict the
input's log-mel: a direct training signal for the encoder, which otherwise learns only through
the decoder), the interaural ILD / phase terms, and optionally Vocos' discriminators (hinge +
feature matching). Optimisation is manual (a generator and, with the discriminators, a
discriminator optimiser).

Quantiser schedule: the first ``quantizer.warmup_steps`` steps train a continuous autoencoder;
then the RVQ codebooks are k-means-initialised on the latents of the last batches and the
quantiser stays on (EnCodec's EMA codebooks and dead-code replacement), with quantiser dropout:
each step uses the largest of ``quantizer.bandwidths`` with probability
``full_bandwidth_probability``, else one of them uniformly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from isdrama.callbacks.generation import GeneratedAudio
from isdrama.codec.architecture import CodecArchitecture
from isdrama.codec.binaural import nearest_codes
from isdrama.codec.config import CodecConfig
from isdrama.codec.losses import AdversarialLoss, InterauralCueLoss, MultiResolutionMelLoss
from isdrama.codec.weights import build_encodec, save_codec_state
from isdrama.data.codec_audio import CodecBatch
from isdrama.lit.optim import AdamConfig, lr_factor
from isdrama.utils.config import build_config, to_plain

log = logging.getLogger(__name__)


class CodecModule(pl.LightningModule):
    """Trains the binaural codec; ``export(path)`` writes what ``codec.checkpoint=PATH`` loads.

    Args (configs/model/codec.yaml):
        codec: the codec group (model, bandwidth = the validation / export bandwidth, seed).
        architecture: :class:`~isdrama.codec.architecture.CodecArchitecture` fields.
        init: ``encodec_pretrained`` (start encoder + RVQ from EnCodec's published weights: true =
            EnCodec's download, or a local file as ``codec.checkpoint`` accepts),
            ``vocos_pretrained`` (null, ``hub`` or a folder / file of Vocos' EnCodec decoder).
        quantizer: ``warmup_steps``, ``bandwidths``, ``full_bandwidth_probability``,
            ``kmeans`` {``frames``, ``n_iters``, ``chunk_size``}.
        losses: weights and settings of every term (see the module docstring).
        optimizer: :class:`~isdrama.lit.optim.AdamConfig` fields + ``grad_clip`` (0 = off);
            ``discriminator_lr`` for the discriminator's Adam.
    """

    def __init__(
        self,
        codec: Mapping[str, Any],
        architecture: Mapping[str, Any],
        init: Mapping[str, Any],
        quantizer: Mapping[str, Any],
        losses: Mapping[str, Any],
        optimizer: Mapping[str, Any],
    ):
        super().__init__()
        # plain containers: a checkpoint then loads with torch.load(weights_only=True)
        args = dict(codec=codec, architecture=architecture, init=init, quantizer=quantizer, losses=losses)
        self.save_hyperparameters({k: to_plain(v) for k, v in {**args, "optimizer": optimizer}.items()})
        self.automatic_optimization = False
        codec_opts = {k: v for k, v in dict(to_plain(codec)).items() if k != "frame_rate"}
        codec_opts.update(architecture=to_plain(architecture), pretrained="false", checkpoint=None)
        self.codec_config = CodecConfig.from_dict(codec_opts)
        self.spec = self.codec_config.spec
        self.arch: CodecArchitecture = self.codec_config.architecture
        self.model = build_encodec(self.spec, self.codec_config.seed, self.arch)
        self.init_source = self._load_init(to_plain(init) or {})
        #: validation CER is scored on lines of this language only (``generate_validation_audio``)
        self.cer_language = "en"
        q = dict(to_plain(quantizer))
        self.q_warmup = int(q["warmup_steps"])
        self.q_bandwidths = sorted(float(b) for b in q["bandwidths"])
        self.q_full_p = float(q["full_bandwidth_probability"])
        self.q_kmeans = dict(q["kmeans"])
        most = self.model.quantizer.get_num_quantizers_for_bandwidth(
            self.spec.encodec_frame_rate, self.q_bandwidths[-1]
        )
        if most > self.arch.n_q:  # EnCodec's RVQ would silently use only the n_q layers there are
            raise ValueError(
                f"model.quantizer.bandwidths: {self.q_bandwidths[-1]:g} kbps needs {most} codebooks, "
                f"model.architecture.n_q is {self.arch.n_q}"
            )
        self.register_buffer("quantizer_on", torch.tensor(self.q_warmup == 0 or self.init_source["encodec"]))
        #: training steps done (generator updates); Lightning's global_step counts every optimiser
        self.register_buffer("steps_done", torch.tensor(0, dtype=torch.long))
        self._latent_frames: list[torch.Tensor] = []
        L = dict(to_plain(losses))
        self.w = {k: float(L[k]["weight"]) for k in ("mel", "waveform_l1", "commitment", "latent_mel")}
        self.w["interaural_ild"] = float(L["interaural"]["ild_weight"])
        self.w["interaural_phase"] = float(L["interaural"]["phase_weight"])
        self.mel_loss = MultiResolutionMelLoss(self.spec.sample_rate, L["mel"]["resolutions"], L["mel"]["floor"])
        lm = L["latent_mel"]
        self.latent_mel = None
        if self.w["latent_mel"] > 0:
            import torchaudio

            self.latent_mel = torchaudio.transforms.MelSpectrogram(
                self.spec.sample_rate, n_fft=int(lm["n_fft"]), hop_length=self.spec.hop_length, n_mels=int(lm["n_mels"])
            )
            self.latent_mel_head = nn.Conv1d(self.spec.dimension, int(lm["n_mels"]), 3, padding=1)
        ia = L["interaural"]
        self.interaural = InterauralCueLoss(
            self.spec.sample_rate, ia["n_fft"], ia["hop_length"], ia["n_bands"], ia["floor_db"], ia["phase_max_hz"]
        )
        adv = dict(L["adversarial"])
        self.adv_cfg = adv
        self.adversarial = AdversarialLoss(adv["periods"], adv["period_discriminator"]) if adv["enabled"] else None
        opt = dict(to_plain(optimizer))
        self.grad_clip = float(opt.pop("grad_clip"))
        self.disc_lr = float(opt.pop("discriminator_lr"))
        self.opt_cfg = build_config(AdamConfig, opt, "model.optimizer")

    # ------------------------------------------------------------------------------ weights
    def _load_init(self, init: Mapping[str, Any]) -> dict[str, Any]:
        """Pretrained starting points (online); returns what was loaded."""
        out = {"encodec": False, "vocos": None}
        source = init.get("encodec_pretrained")
        if source:
            from isdrama.codec.weights import download_pretrained_state, read_checkpoint

            # true: EnCodec's own download; a path: its file / a state dict (read as codec.checkpoint)
            state = download_pretrained_state(self.spec) if source is True else read_checkpoint(source, self.spec)
            keep = {k: v for k, v in state.items() if k.startswith(("encoder.", "quantizer."))}
            if self.arch.decoder == "seanet":
                keep.update({k: v for k, v in state.items() if k.startswith("decoder.")})
            n_q = self.arch.n_q
            keep = {
                k: v for k, v in keep.items() if not k.startswith("quantizer.vq.layers.") or int(k.split(".")[3]) < n_q
            }
            missing, unexpected = self.model.load_state_dict(keep, strict=False)
            wrong = [k for k in missing if not k.startswith("decoder.")] + list(unexpected)
            if wrong:
                raise ValueError(f"EnCodec's pretrained weights do not fit model.architecture: {wrong[:5]}")
            out["encodec"] = True
        source = init.get("vocos_pretrained")
        if source:
            if self.arch.decoder != "vocos":
                raise ValueError("model.init.vocos_pretrained needs model.architecture.decoder=vocos")
            from isdrama.codec.vocos_decoder import load_pretrained_vocos

            out["vocos"] = load_pretrained_vocos(self.model.decoder, None if source == "hub" else str(source))
        return out

    def export(self, path: Path | str, extra: Optional[Mapping[str, Any]] = None) -> Path:
        """Write the codec (config with architecture + weights) atomically; load it anywhere with
        ``codec.checkpoint=PATH`` / ``--codec-checkpoint PATH``."""
        if not bool(self.quantizer_on):
            log.warning("exporting a codec whose quantiser was never turned on: its codebooks are still empty")
        info = {"step": int(self.steps_done), "quantizer_on": bool(self.quantizer_on), **dict(extra or {})}
        return save_codec_state(path, self.codec_config, self.model, info)

    # ------------------------------------------------------------------------------ forward
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 2, S) -> per-ear latent (2B, D, T)."""
        return self.model.encoder(rearrange(wav, "b e s -> (b e) 1 s") * float(self.arch.input_scale))

    def decode(self, latent: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """(2B, D, T) -> (B, 2, length)."""
        y = self.model.decoder(latent)[..., :length] / float(self.arch.input_scale)
        if y.shape[-1] < length:
            y = F.pad(y, (0, length - y.shape[-1]))
        return rearrange(y, "(b e) 1 s -> b e s", b=batch, e=2)

    def quantize(self, latent: torch.Tensor, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
        """RVQ at ``bandwidth`` (training: straight-through, EMA updates) -> (quantised, commitment)."""
        result = self.model.quantizer(latent, self.spec.encodec_frame_rate, bandwidth)
        return result.quantized, result.penalty

    def step_bandwidth(self, step: int) -> float:
        """The bandwidth of training step ``step`` (quantiser dropout), the same on every rank."""
        rng = np.random.default_rng((int(self.codec_config.seed), int(step)))
        if len(self.q_bandwidths) == 1 or rng.random() < self.q_full_p:
            return self.q_bandwidths[-1]
        return float(rng.choice(self.q_bandwidths))

    # ------------------------------------------------------------------------------ training
    def _maybe_start_quantizer(self, latent: torch.Tensor) -> None:
        """Collect latent frames during the warm-up; at its end k-means-initialise the codebooks."""
        if bool(self.quantizer_on):
            return
        frames = rearrange(latent.detach(), "n d t -> (n t) d").float().cpu()
        self._latent_frames.append(frames)
        have = sum(f.shape[0] for f in self._latent_frames)
        cap = int(self.q_kmeans["frames"])
        while have - self._latent_frames[0].shape[0] >= cap:
            have -= self._latent_frames.pop(0).shape[0]
        if int(self.steps_done) + 1 < self.q_warmup:
            return
        from isdrama.codec.kmeans_init import kmeans_init_layers
        from isdrama.utils.distributed import broadcast_module_buffers

        samples = torch.cat(self._latent_frames)[-cap:]
        generator = torch.Generator().manual_seed(int(self.codec_config.seed))
        layers = self.model.quantizer.vq.layers[
            : self.model.quantizer.get_num_quantizers_for_bandwidth(self.spec.encodec_frame_rate, self.q_bandwidths[-1])
        ]
        report = kmeans_init_layers(
            layers, samples, int(self.q_kmeans["n_iters"]), int(self.q_kmeans["chunk_size"]), generator, False
        )
        broadcast_module_buffers(self.model.quantizer)
        self.quantizer_on.fill_(True)
        self._latent_frames.clear()
        log.info("step %d: quantiser on; %s", int(self.steps_done), report.format())

    def reconstruction_losses(
        self, wav: torch.Tensor, bandwidth: Optional[float], train: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """wav (B, 2, S) -> (weighted total, the terms, reconstruction (B, 2, S))."""
        batch, _, length = wav.shape
        latent = self.encode(wav)
        if train:
            self._maybe_start_quantizer(latent)
        terms: dict[str, torch.Tensor] = {}
        quantised = latent
        if bool(self.quantizer_on) and bandwidth is not None:
            if train:
                quantised, terms["commitment"] = self.quantize(latent, bandwidth)
            else:
                # the codec's own token search (float64 nearest codes), so validation hears what
                # BinauralCodec.encode -> decode gives
                n_q = self.model.quantizer.get_num_quantizers_for_bandwidth(self.spec.encodec_frame_rate, bandwidth)
                codes = nearest_codes(self.model.quantizer.vq.layers[:n_q], latent.float())
                quantised = self.model.quantizer.vq.decode(codes).to(latent.dtype)
        recon = self.decode(quantised, batch, length)
        terms["mel"] = self.mel_loss(recon, wav)
        terms["waveform_l1"] = F.l1_loss(recon, wav)
        if self.latent_mel is not None:
            target = self.latent_mel(rearrange(wav, "b e s -> (b e) s")).clamp_min(1e-5).log()[..., : latent.shape[-1]]
            pred = self.latent_mel_head(latent)[..., : target.shape[-1]]
            terms["latent_mel"] = F.l1_loss(pred, target)
        terms["interaural_ild"], terms["interaural_phase"] = self.interaural(recon, wav)
        total = sum(self.w[k] * v for k, v in terms.items())
        return total, terms, recon

    def training_step(self, batch: CodecBatch, batch_idx: int) -> torch.Tensor:
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, (list, tuple)) else (opts, None)
        step = int(self.steps_done)
        bandwidth = self.step_bandwidth(step)
        # EnCodec replaces dead codes with random batch vectors from the global RNG: seeded per step
        # here, so a resumed run draws what the uninterrupted one drew
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(np.random.default_rng((int(self.codec_config.seed), step, 1)).integers(2**62)))
            total, terms, recon = self.reconstruction_losses(batch.wav, bandwidth, train=True)
        adv_on = self.adversarial is not None and step >= int(self.adv_cfg["start_step"])
        if adv_on:
            d_loss = self.adversarial.discriminator(recon, batch.wav)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._clip(opt_d)
            opt_d.step()
            adv, fm = self.adversarial.generator(recon, batch.wav)
            terms.update(adversarial=adv, feature_matching=fm, discriminator=d_loss.detach())
            total = total + float(self.adv_cfg["weight"]) * adv + float(self.adv_cfg["feature_matching_weight"]) * fm
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(total)
        self._clip(opt_g)
        opt_g.step()
        for sched in self._schedulers():
            sched.step()
        self.steps_done += 1
        size = batch.wav.shape[0]
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=size)
        self.log("train/bandwidth", bandwidth if bool(self.quantizer_on) else 0.0, batch_size=size)
        for k, v in terms.items():
            self.log(f"train/{k}", v.detach(), prog_bar=k == "mel", batch_size=size)
        return total.detach()

    def _clip(self, opt) -> None:
        if self.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def _schedulers(self) -> list:
        s = self.lr_schedulers()
        return [] if s is None else (list(s) if isinstance(s, (list, tuple)) else [s])

    def validation_step(self, batch: CodecBatch, batch_idx: int) -> None:
        bandwidth = self.codec_config.bandwidth
        total, terms, _ = self.reconstruction_losses(batch.wav, bandwidth if bool(self.quantizer_on) else None, False)
        size = batch.wav.shape[0]
        self.log("val/loss", total, prog_bar=True, batch_size=size, sync_dist=True)
        for k, v in terms.items():
            self.log(f"val/{k}", v, batch_size=size, sync_dist=True)

    @torch.no_grad()
    def generate_validation_audio(self, batch: CodecBatch) -> GeneratedAudio:
        """The round trip of the validation lines at ``codec.bandwidth``: encode -> tokens -> decode."""
        _, _, recon = self.reconstruction_losses(
            batch.wav, self.codec_config.bandwidth if bool(self.quantizer_on) else None, False
        )
        return GeneratedAudio(
            wav=recon.float(),
            lengths=batch.lengths,
            sample_rate=self.spec.sample_rate,
            names=list(batch.names),
            gt_wav=batch.wav,
            gt_lengths=batch.lengths,
            # CER only where the ASR suits the language (Whisper tiny.en: English lines)
            texts=[t if lang == self.cer_language else None for t, lang in zip(batch.texts, batch.languages)],
        )

    def configure_optimizers(self):
        cfg = self.opt_cfg
        cls = torch.optim.AdamW if cfg.decoupled else torch.optim.Adam
        params = [p for n, p in self.named_parameters() if not n.startswith("adversarial.") and p.requires_grad]
        opt_g = cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_factor(s, cfg))
        if self.adversarial is None:
            return [opt_g], [{"scheduler": sched_g, "interval": "step", "name": "lr"}]
        opt_d = cls(self.adversarial.parameters(), lr=self.disc_lr, betas=tuple(cfg.betas), eps=cfg.eps)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: lr_factor(s, cfg))
        return [opt_g, opt_d], [
            {"scheduler": sched_g, "interval": "step", "name": "lr"},
            {"scheduler": sched_d, "interval": "step", "name": "lr_discriminator"},
        ]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Besides Lightning's state: the codec config (with architecture) and, during the warm-up,
        the latent frames collected for the k-means initialisation, so a resumed run continues as
        the uninterrupted one."""
        checkpoint["codec_config"] = self.codec_config.to_dict()
        if not bool(self.quantizer_on):
            checkpoint["kmeans_latent_frames"] = list(self._latent_frames)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._latent_frames = list(checkpoint.get("kmeans_latent_frames", []))
