"""Validation on generated audio: a fixed set of validation lines, synthesised every N epochs,
scored with the evaluation metrics (DDP-synced), logged as scalars, audio and figures.

The LightningModule synthesises (protocol in :mod:`isdrama.callbacks.generation`)::

    def generate_validation_audio(self, batch) -> GeneratedAudio

Lines: the first ``num_lines`` lines the validation dataloader yields in the first (non-sanity)
validation run, split over ranks (rank r keeps ``num_lines // W + (r < num_lines % W)`` lines of
its own shard), stored on the CPU and reused unchanged in every later run.

Metrics (names as in :mod:`isdrama.metrics.pipeline`): ``ipd`` -> ipd_mae, ``ild`` -> ild_mae,
``ang`` -> ang_cos (+ angle_error_deg), ``dis`` -> dis_cos (+ distance_error_m), both needing the
SpatialAST checkpoint; ``cer`` -> cer, wer (needs texts); ``sim`` -> sim_prompt, sim_gt; ``ffe``
-> ffe, gpe, vde. Kept as torchmetrics sum states (:mod:`isdrama.callbacks.metric_states`):
every rank scores its lines, ``compute()`` gives the mean over all lines of all ranks. A metric
whose backend cannot run here is skipped with one warning, never given a made-up value.

Logging: scalars ``<prefix>/<metric>`` through ``pl_module.log`` (every Lightning logger, and
``trainer.callback_metrics`` even with ``logger=False``) with ``sync_dist=False``: ``compute()``
already synced the states, so every rank holds the global mean and a second (mean-of-means)
reduction would be redundant; on global rank 0 the first ``log_audio``
lines as media: to a ``WandbLogger`` stereo ``wandb.Audio`` (generated, ground truth) and
``wandb.Image`` (L/R spectrograms, IPD/ILD error per mel band); for any other logger (CSV,
TensorBoard, ...) the same as wav (float, atomic) / PNG files plus ``metrics.json`` under
``<logger log_dir or save_dir or trainer.default_root_dir>/<prefix>/epoch_XXX/``; with
``logger=False`` no media are written. W&B offline works as online (media land in the
offline run folder).
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from isdrama.callbacks.generation import GENERATE_METHOD, GeneratedAudio, batch_size_of, take_lines, to_device
from isdrama.callbacks.metric_states import MeanOfItems, SpatialMAEState
from isdrama.callbacks.plots import (
    SpectrogramConfig,
    band_error_figure,
    figure_to_rgb,
    ild_curve_figure,
    save_figure,
    spectrogram_figure,
)
from isdrama.metrics.pipeline import ALL_METRICS
from isdrama.metrics.spatial import SpatialMAEConfig
from isdrama.utils.config import build_config, to_plain

__all__ = ["ValidationAudioCallback", "METRIC_KEYS"]

#: logged result keys of each selectable metric
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "ipd": ("ipd_mae",),
    "ild": ("ild_mae",),
    "ang": ("ang_cos", "angle_error_deg"),
    "dis": ("dis_cos", "distance_error_m"),
    "cer": ("cer", "wer"),
    "sim": ("sim_prompt", "sim_gt"),
    "ffe": ("ffe", "gpe", "vde"),
}
#: metrics that compare with the ground-truth audio (``cer`` needs texts, ``sim`` a prompt or the gt)
NEEDS_GT = ("ipd", "ild", "ang", "dis", "ffe")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "line"


class ValidationAudioCallback(pl.Callback):
    """Generate, score and log audio for a fixed set of validation lines every N epochs.

    Args:
        every_n_epochs: run after the validation of epochs N-1, 2N-1, ... (0-based).
        num_lines: lines scored per run, over all ranks (the fixed set).
        metrics: subset of ("ipd", "ild", "ang", "dis", "cer", "sim", "ffe").
        mode: "corrected" (default) or "reference" (published units) for IPD/ILD and ANG/DIS.
        log_audio: lines (of rank 0) sent as audio + spectrograms to the loggers; 0 = none.
        log_plots: make spectrogram / per-band error figures.
        spatial: :class:`~isdrama.metrics.spatial.SpatialMAEConfig` fields (``energy_mask_db``,
            ``dtype``, ``cues``: {...}); ``mode`` comes from ``mode``, ``device`` from the module.
        spatial_ast_checkpoint: BAT's SpatialAST ``finetuned.pth`` (ANG/DIS); None skips them
            with a warning; a path that does not exist is an error at setup.
        spatial_ast: :class:`~isdrama.metrics.spatial_ast.SpatialASTMetricConfig` fields
            (``phase_wrap_quirk``, ``segment_seconds``, ``batch_size``).
        speech: :class:`~isdrama.metrics.speech.SpeechMetricsConfig` fields (``lang``,
            ``cer_on_gt``, ``asr``: {...}, ``speaker``: {...}, ``ffe``: {...}).
        spectrogram: :class:`~isdrama.callbacks.plots.SpectrogramConfig` fields.
        prefix: name prefix of everything logged (``val_audio/ipd_mae``).
        dataloader_idx: the validation dataloader the lines come from.
        run_on_validate: also run in ``trainer.validate`` (whatever the epoch).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_lines: int = 4,
        metrics: Sequence[str] = ("ipd", "ild", "ffe"),
        mode: str = "corrected",
        log_audio: int = 2,
        log_plots: bool = True,
        spatial: Optional[Mapping] = None,
        spatial_ast_checkpoint: Optional[str] = None,
        spatial_ast: Optional[Mapping] = None,
        speech: Optional[Mapping] = None,
        spectrogram: Optional[Mapping] = None,
        prefix: str = "val_audio",
        dataloader_idx: int = 0,
        run_on_validate: bool = True,
    ):
        super().__init__()
        where = "ValidationAudioCallback"
        if int(every_n_epochs) < 1:
            raise ValueError(f"{where}.every_n_epochs: expected >= 1, got {every_n_epochs}")
        if int(num_lines) < 1:
            raise ValueError(f"{where}.num_lines: expected >= 1, got {num_lines}")
        if int(log_audio) < 0:
            raise ValueError(f"{where}.log_audio: expected >= 0, got {log_audio}")
        metrics = tuple(to_plain(metrics) or ())
        unknown = sorted(set(metrics) - set(ALL_METRICS))
        if unknown or not metrics:
            raise ValueError(
                f"{where}.metrics: unknown or empty {unknown or list(metrics)}; choose from {', '.join(ALL_METRICS)}"
            )
        if mode not in ("corrected", "reference"):
            raise ValueError(f"{where}.mode: expected 'corrected' or 'reference', got {mode!r}")
        self.every_n_epochs = int(every_n_epochs)
        self.num_lines = int(num_lines)
        self.metrics = tuple(m for m in ALL_METRICS if m in metrics)
        self.mode = mode
        self.log_audio = int(log_audio)
        self.log_plots = bool(log_plots)
        self.prefix = prefix
        self.dataloader_idx = int(dataloader_idx)
        self.run_on_validate = bool(run_on_validate)
        self.spatial_ast_checkpoint = spatial_ast_checkpoint
        self.spatial_cfg = build_config(SpatialMAEConfig, spatial, f"{where}.spatial", mode=mode)
        self.spectrogram_cfg = build_config(SpectrogramConfig, spectrogram, f"{where}.spectrogram")
        from isdrama.metrics.spatial_ast import SpatialASTMetricConfig

        self.spatial_ast_cfg = build_config(SpatialASTMetricConfig, spatial_ast, f"{where}.spatial_ast", mode=mode)
        self.speech_cfg = None
        if any(m in self.metrics for m in ("cer", "sim", "ffe")) or speech:
            from isdrama.metrics.speech import SpeechMetricsConfig

            self.speech_cfg = build_config(SpeechMetricsConfig, speech, f"{where}.speech")
        # run state
        self._lines: list[tuple[Any, int]] = []  # (batch on CPU, lines used from it)
        self._collected = 0
        self._frozen = False
        self._last_epoch: Optional[int] = None
        self._states: Optional[dict[str, MeanOfItems]] = None
        self.skipped: dict[str, str] = {}  #: metric -> reason it is not computed
        self.results: dict[str, float] = {}  #: scalars of the last run (this process's view: global means)
        self.line_names: list[str] = []  #: names of this rank's fixed lines (after the first run)

    # ------------------------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        if not callable(getattr(pl_module, GENERATE_METHOD, None)):
            raise TypeError(
                f"ValidationAudioCallback: {type(pl_module).__name__} has no method {GENERATE_METHOD}(batch) -> "
                f"GeneratedAudio, so there is no audio to validate. Implement it (protocol "
                f"isdrama.callbacks.generation.ValidationAudioGenerator) or drop the callback "
                f"(callbacks=default)."
            )
        if self._states is None:
            self._states = self._build_states()
        # values are logged with sync_dist=False because Metric.compute() already synced them;
        # Lightning's generic "use sync_dist=True" hint does not apply to these keys
        hint = r"It is recommended to use `self\.log\('" + re.escape(self.prefix) + "/"
        warnings.filterwarnings("ignore", message=hint, category=PossibleUserWarning)

    def _skip(self, metric: str, reason: str) -> None:
        if metric not in self.skipped:
            self.skipped[metric] = reason
            rank_zero_warn(f"ValidationAudioCallback: {metric} skipped: {reason}")

    def _build_states(self) -> dict[str, MeanOfItems]:
        """One state per metric group; unavailable groups are skipped with a warning."""
        states: dict[str, MeanOfItems] = {}
        if "ipd" in self.metrics or "ild" in self.metrics:
            states["spatial"] = SpatialMAEState(self.spatial_cfg)
        ast = [m for m in ("ang", "dis") if m in self.metrics]
        if ast:
            if not self.spatial_ast_checkpoint:
                for m in ast:
                    self._skip(
                        m,
                        "no SpatialAST checkpoint (set spatial_ast_checkpoint: PATH/finetuned.pth, "
                        "BAT's released model)",
                    )
            else:
                from isdrama.callbacks.metric_states import SpatialASTState
                from isdrama.metrics.spatial_ast import load_spatial_ast

                model, report = load_spatial_ast(self.spatial_ast_checkpoint, device="cpu")
                if not report.heads_loaded:
                    self._skip("angle_error_deg", f"{self.spatial_ast_checkpoint} has no classification heads")
                states["spatial_ast"] = SpatialASTState(model, self.spatial_ast_cfg, heads=report.heads_loaded)
        speech = [m for m in ("cer", "sim", "ffe") if m in self.metrics]
        if speech:
            from isdrama.callbacks.metric_states import SpeechState

            state = SpeechState(speech, self.speech_cfg)
            for m, reason in state.unavailable.items():
                self._skip(m, reason)
            if state.active:
                states["speech"] = state
        return states

    # ------------------------------------------------------------------------------- collection
    def _share(self, trainer: pl.Trainer) -> int:
        world, rank = max(1, trainer.world_size), trainer.global_rank
        return self.num_lines // world + (1 if rank < self.num_lines % world else 0)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or self._frozen or dataloader_idx != self.dataloader_idx:
            return
        need = self._share(trainer) - self._collected
        if need <= 0:
            return
        n = min(batch_size_of(batch), need)
        self._lines.append((to_device(take_lines(batch, n), "cpu"), n))
        self._collected += n

    def _should_run(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn == "validate":
            return self.run_on_validate
        epoch = trainer.current_epoch
        return (epoch + 1) % self.every_n_epochs == 0 and epoch != self._last_epoch

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._frozen = True  # the first real validation run fixed the lines
        if not self._should_run(trainer):
            return
        if trainer.state.fn != "validate":
            self._last_epoch = trainer.current_epoch
        self._run(trainer, pl_module)

    # ------------------------------------------------------------------------------------- run
    def _generate(self, pl_module: pl.LightningModule, batch: Any, n: int) -> GeneratedAudio:
        out = getattr(pl_module, GENERATE_METHOD)(to_device(batch, pl_module.device))
        if not isinstance(out, GeneratedAudio):
            raise TypeError(
                f"{type(pl_module).__name__}.{GENERATE_METHOD}() returned {type(out).__name__}; "
                f"expected isdrama.callbacks.generation.GeneratedAudio"
            )
        out.validate()
        if len(out) < n:
            raise ValueError(
                f"{type(pl_module).__name__}.{GENERATE_METHOD}() returned {len(out)} lines for a batch of {n}"
            )
        out = out.take(n)
        needs = [m for m in NEEDS_GT if m in self.metrics and m not in self.skipped]
        if out.gt_wav is None and needs:
            raise ValueError(
                f"{type(pl_module).__name__}.{GENERATE_METHOD}() returned no gt_wav, but metric(s) "
                f"{needs} compare with the ground-truth audio"
            )
        return out

    def _score(self, out: GeneratedAudio) -> None:
        states = self._states or {}
        if "spatial" in states:
            states["spatial"].update(out.gt_wav, out.wav, out.sample_rate, out.gt_lengths, out.lengths)
        if "spatial_ast" in states:
            states["spatial_ast"].update(out.gt_wav, out.wav, out.sample_rate, out.gt_lengths, out.lengths)
        if "speech" in states:
            states["speech"].update(self._speech_items(out))

    @staticmethod
    def _speech_items(out: GeneratedAudio) -> list:
        from isdrama.metrics.speech import SpeechItem

        def arr(wav: Optional[torch.Tensor], lengths: Optional[torch.Tensor], i: int) -> Optional[np.ndarray]:
            if wav is None or int(lengths[i]) == 0:
                return None
            return wav[i, :, : int(lengths[i])].detach().float().cpu().numpy()

        sr = out.sample_rate
        items = []
        for i, name in enumerate(out.names):
            prompt = arr(out.prompt_wav, out.prompt_lengths, i)
            text = out.texts[i] if out.texts is not None else None
            items.append(
                SpeechItem(
                    str(name),
                    arr(out.wav, out.lengths, i),
                    sr,
                    gt=arr(out.gt_wav, out.gt_lengths, i),
                    gt_sr=sr,
                    prompt=prompt,
                    prompt_sr=sr if prompt is not None else None,
                    text=text or None,
                )
            )
        return items

    @torch.no_grad()
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states = self._states if self._states is not None else self._build_states()
        self._states = states
        for st in states.values():
            st.to(pl_module.device)
            st.reset()
        media: list[dict] = []
        names: list[str] = []
        was_training = pl_module.training
        pl_module.eval()
        try:
            for batch, n in self._lines:
                out = self._generate(pl_module, batch, n)
                names.extend(str(x) for x in out.names)
                self._score(out)
                for i in range(len(out)):
                    if trainer.is_global_zero and len(media) < self.log_audio:
                        media.append(self._media_item(out, i))
        finally:
            pl_module.train(was_training)
        self.line_names = names
        computed: dict[str, torch.Tensor] = {}
        with warnings.catch_warnings():  # a rank with no line still takes part in the sync
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            for st in states.values():  # same order on every rank: compute() is a collective
                computed.update(st.compute())
        self._report_problems(states)
        wanted = [k for m in self.metrics for k in METRIC_KEYS[m]]
        self.results = {k: float(computed[k]) for k in wanted if k in computed and computed[k].ndim == 0}
        for key, value in self.results.items():
            # already the mean over all ranks' lines (compute() synced the sum/count states)
            pl_module.log(
                f"{self.prefix}/{key}", value, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False
            )
        if self.results:
            rank_zero_info(
                f"{self.prefix} (epoch {trainer.current_epoch}, {self.num_lines} lines): "
                + ", ".join(f"{k}={v:.4g}" for k, v in self.results.items())
            )
        bands = {
            k: computed[f"{k}_bands"].cpu().numpy()
            for k in ("ipd", "ild")
            if k in self.metrics and f"{k}_bands" in computed
        }
        if trainer.is_global_zero and trainer.loggers:
            self._log_media(trainer, media, bands, states.get("spatial"))

    def _report_problems(self, states: Mapping[str, MeanOfItems]) -> None:
        speech = states.get("speech")
        if speech is None:
            return
        for m, reason in speech.unavailable.items():
            self._skip(m, reason)
        if speech.problems:
            rank_zero_warn(
                f"ValidationAudioCallback: {len(speech.problems)} line(s) not scored: " + "; ".join(speech.problems[:5])
            )
            speech.problems.clear()

    @staticmethod
    def _media_item(out: GeneratedAudio, i: int) -> dict:
        def cut(wav, lengths):
            return None if wav is None else wav[i, :, : int(lengths[i])].detach().float().cpu()

        return {
            "name": str(out.names[i]),
            "sample_rate": out.sample_rate,
            "gen": cut(out.wav, out.lengths),
            "gt": cut(out.gt_wav, out.gt_lengths),
        }

    # ----------------------------------------------------------------------------------- media
    def _figures(
        self, media: Sequence[dict], bands: Mapping[str, np.ndarray], spatial: Optional[SpatialMAEState]
    ) -> tuple[list, Any]:
        if not self.log_plots:
            return [], None
        specs = [
            spectrogram_figure(m["gen"], m["sample_rate"], m["gt"], title=m["name"], cfg=self.spectrogram_cfg)
            for m in media
        ]
        for m in media:  # the interaural level over time, beside the spectrograms
            m["ild_curve"] = ild_curve_figure(
                m["gen"], m["sample_rate"], m["gt"], title=m["name"], dpi=self.spectrogram_cfg.dpi
            )
        band_fig = None
        if bands and spatial is not None:
            ref = self.mode == "reference"
            band_fig = band_error_figure(
                bands.get("ipd"),
                bands.get("ild"),
                spatial.band_centres_hz(),
                "published x100" if ref else "rad",
                "published x100" if ref else "dB",
                title=f"IPD/ILD error per mel band ({self.mode}, {self.num_lines} lines)",
                dpi=self.spectrogram_cfg.dpi,
            )
        return specs, band_fig

    def _log_media(
        self,
        trainer: pl.Trainer,
        media: Sequence[dict],
        bands: Mapping[str, np.ndarray],
        spatial: Optional[SpatialMAEState],
    ) -> None:
        from pytorch_lightning.loggers import WandbLogger

        try:
            specs, band_fig = self._figures(media, bands, spatial)
        except Exception as err:  # figures must never stop training
            rank_zero_warn(f"ValidationAudioCallback: figures not made: {err!r}")
            specs, band_fig = [], None
        for lg in trainer.loggers:
            try:
                if isinstance(lg, WandbLogger):
                    self._to_wandb(lg, trainer.global_step, media, specs, band_fig)
                else:
                    self._to_files(self._media_dir(trainer, lg), media, specs, band_fig)
            except Exception as err:  # a logger failing to take media must never stop training
                rank_zero_warn(f"ValidationAudioCallback: media not logged to {type(lg).__name__}: {err!r}")

    def _to_wandb(self, lg: Any, step: int, media: Sequence[dict], specs: list, band_fig: Any) -> None:
        p = self.prefix
        if media:
            names = [m["name"] for m in media]
            lg.log_audio(
                f"{p}/generated",
                [m["gen"].T.numpy() for m in media],
                step=step,
                sample_rate=[m["sample_rate"] for m in media],
                caption=names,
            )
            gts = [m for m in media if m["gt"] is not None]
            if gts:
                lg.log_audio(
                    f"{p}/ground_truth",
                    [m["gt"].T.numpy() for m in gts],
                    step=step,
                    sample_rate=[m["sample_rate"] for m in gts],
                    caption=[m["name"] for m in gts],
                )
        if specs:
            lg.log_image(
                f"{p}/spectrogram", [figure_to_rgb(f) for f in specs], step=step, caption=[m["name"] for m in media]
            )
        curves = [m for m in media if m.get("ild_curve") is not None]
        if curves:
            lg.log_image(
                f"{p}/ild_over_time",
                [figure_to_rgb(m["ild_curve"]) for m in curves],
                step=step,
                caption=[m["name"] for m in curves],
            )
        if band_fig is not None:
            lg.log_image(f"{p}/band_errors", [figure_to_rgb(band_fig)], step=step)

    def _media_dir(self, trainer: pl.Trainer, lg: Any) -> Path:
        root = getattr(lg, "log_dir", None) or getattr(lg, "save_dir", None) or trainer.default_root_dir
        return Path(root) / self.prefix / f"epoch_{trainer.current_epoch:03d}"

    def _to_files(self, folder: Path, media: Sequence[dict], specs: list, band_fig: Any) -> None:
        from isdrama.data.audio import write_audio
        from isdrama.utils.io import atomic_write_json

        folder.mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(media):
            stem = f"{k:02d}_{_safe_name(m['name'])}"
            for tag in ("gen", "gt"):
                if m[tag] is not None:  # (2, N) float, atomically; NaN/inf audio is refused
                    write_audio(folder / f"{stem}_{tag}.wav", m[tag].numpy(), m["sample_rate"], subtype="FLOAT")
            if k < len(specs):
                save_figure(specs[k], folder / f"{stem}_spectrogram.png")
            if m.get("ild_curve") is not None:
                save_figure(m["ild_curve"], folder / f"{stem}_ild_over_time.png")
        if band_fig is not None:
            save_figure(band_fig, folder / "band_errors.png")
        atomic_write_json(
            folder / "metrics.json",
            {
                "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.results.items()},
                "skipped": self.skipped,
                "mode": self.mode,
                "num_lines": self.num_lines,
                "lines_logged": [m["name"] for m in media],
            },
        )
