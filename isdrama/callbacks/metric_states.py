"""torchmetrics state for the validation-audio metrics: per-item values kept as sums and counts.

Every state is a sum with ``dist_reduce_fx="sum"``, so under DDP each rank scores its own lines
and ``compute()`` (which syncs the states first) gives the mean over all lines of all ranks, the
same number a single process scoring every line would give. Two instances combine with
``a.merge_state(b)``. Only finite values are counted (a NaN GPE or a band without energy is
"nothing to measure", not zero); a metric no item could be scored on is absent from ``compute()``.

Metric names (as in :mod:`isdrama.metrics.pipeline`): ipd_mae, ild_mae, ang_cos, dis_cos,
angle_error_deg, distance_error_m, cer, wer, sim_prompt, sim_gt, ffe, gpe, vde.
Shapes: B items, N samples, M = 128 mel bands.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from isdrama.metrics.spatial import SpatialMAEConfig, spatial_errors, spatial_extractor

__all__ = ["MeanOfItems", "SpatialMAEState", "SpatialASTState", "SpeechState", "SPEECH_KEYS"]

#: per-item keys the speech state accumulates (a SpeechMetrics row's metric values)
SPEECH_KEYS = ("cer", "wer", "sim_prompt", "sim_gt", "ffe", "gpe", "vde")


class MeanOfItems(Metric):
    """Mean over items of each of ``keys``; states ``<key>_sum`` and ``<key>_count`` (float64 scalars)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, keys: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.keys = tuple(keys)
        for k in self.keys:
            self.add_state(f"{k}_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{k}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def add_values(self, key: str, values: torch.Tensor | Sequence[float]) -> None:
        """Add per-item values (B,) of ``key``; non-finite ones are not counted."""
        if key not in self.keys:
            raise KeyError(f"{type(self).__name__}: unknown key {key!r}; expected one of {self.keys}")
        v = torch.as_tensor(values, dtype=torch.float64).to(self.device).reshape(-1)
        ok = torch.isfinite(v)
        setattr(self, f"{key}_sum", getattr(self, f"{key}_sum") + v[ok].sum())
        setattr(self, f"{key}_count", getattr(self, f"{key}_count") + ok.sum())

    def update(self, values: Mapping[str, torch.Tensor | Sequence[float]]) -> None:  # type: ignore[override]
        """values: {key: (B,) per-item values}."""
        for k, v in values.items():
            self.add_values(k, v)

    def counts(self) -> dict[str, int]:
        """Items counted per key on this process (not synced)."""
        return {k: int(getattr(self, f"{k}_count")) for k in self.keys}

    def compute(self) -> dict[str, torch.Tensor]:
        """{key: mean over counted items} for every key with at least one item."""
        out = {}
        for k in self.keys:
            count = getattr(self, f"{k}_count")
            if count > 0:
                out[k] = getattr(self, f"{k}_sum") / count
        return out


class SpatialMAEState(MeanOfItems):
    """IPD / ILD MAE (``ipd_mae``, ``ild_mae``) and their per-mel-band profiles.

    Per item the values of :func:`isdrama.metrics.spatial.spatial_errors` (x100 in reference mode,
    the published unit; radians / dB in corrected mode); the result is their mean over items,
    as the evaluation pipeline reports it. ``compute()`` adds ``ipd_bands`` / ``ild_bands`` (M,):
    per-band means over the items that had energy in the band (NaN where none had).
    """

    def __init__(self, cfg: Optional[SpatialMAEConfig] = None, **kwargs):
        super().__init__(("ipd_mae", "ild_mae"), **kwargs)
        self.cfg = cfg or SpatialMAEConfig()
        self.scale = 100.0 if self.cfg.mode == "reference" else 1.0
        m = self.cfg.cues.n_mels
        for k in ("ipd", "ild"):
            self.add_state(f"{k}_band_sum", torch.zeros(m, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{k}_band_count", torch.zeros(m, dtype=torch.float64), dist_reduce_fx="sum")
        self._extractor = None

    def extractor(self):
        """The mode's computation (`spatial_extractor`: mel constants, reference-mode STFT) on this
        metric's device, built once per device."""
        if self._extractor is None or self._extractor.device != self.device:
            self._extractor = spatial_extractor(self.cfg, self.device)
        return self._extractor

    def band_centres_hz(self) -> np.ndarray:
        """(M,) weighted centre frequency of each mel band (for plots)."""
        ext = self.extractor()
        freqs = torch.linspace(0, self.cfg.cues.sample_rate / 2, ext.mel.shape[0], dtype=torch.float64)
        mel = ext.mel.double().cpu()
        return ((mel * freqs[:, None]).sum(0) / mel.sum(0).clamp_min(1e-12)).numpy()

    def update(
        self,
        gt: torch.Tensor,
        gen: torch.Tensor,
        sample_rate: int,  # type: ignore[override]
        gt_lengths: Optional[torch.Tensor] = None,
        gen_lengths: Optional[torch.Tensor] = None,
        gen_sample_rate: Optional[int] = None,
    ) -> None:
        """gt, gen (B, 2, N*) binaural, zero-padded, with true lengths (B,)."""
        cfg = replace(self.cfg, device=str(self.device))
        err = spatial_errors(
            gt,
            gen,
            sample_rate,
            gt_lengths,
            gen_lengths,
            cfg,
            gen_sample_rate=gen_sample_rate,
            extractor=self.extractor(),
        )
        self.add_values("ipd_mae", err.ipd * self.scale)
        self.add_values("ild_mae", err.ild * self.scale)
        for k, bands in (("ipd", err.ipd_bands), ("ild", err.ild_bands)):
            b = bands.to(self.device, torch.float64) * self.scale
            ok = torch.isfinite(b)
            setattr(self, f"{k}_band_sum", getattr(self, f"{k}_band_sum") + torch.where(ok, b, 0.0).sum(0))
            setattr(self, f"{k}_band_count", getattr(self, f"{k}_band_count") + ok.sum(0))

    def compute(self) -> dict[str, torch.Tensor]:
        out = super().compute()
        for k in ("ipd", "ild"):
            count = getattr(self, f"{k}_band_count")
            mean = getattr(self, f"{k}_band_sum") / count.clamp_min(1)
            out[f"{k}_bands"] = torch.where(count > 0, mean, torch.full_like(mean, float("nan")))
        return out


class SpatialASTState(MeanOfItems):
    """ANG Cos / DIS Cos (and, with the checkpoint's heads, angle / distance errors) of B pairs.

    In memory, with the published preprocessing (:func:`isdrama.metrics.spatial_ast.prepare_waveform`)
    and the published cosine (:func:`isdrama.metrics.spatial_ast.token_cosine`), as
    :func:`isdrama.metrics.spatial_ast.spatial_ast_scores` does for files. The encoder is a
    submodule, so ``.to(device)`` moves it with the states.
    """

    def __init__(self, model: torch.nn.Module, cfg=None, heads: bool = True, **kwargs):
        from isdrama.metrics.spatial_ast import SpatialASTMetricConfig

        keys = ("ang_cos", "dis_cos") + (("angle_error_deg", "distance_error_m") if heads else ())
        super().__init__(keys, **kwargs)
        self.model = model.eval()
        self.cfg = cfg or SpatialASTMetricConfig()
        self.heads = heads

    @torch.no_grad()
    def _embed(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[dict[str, np.ndarray]]:
        """(2, N_i) arrays -> per item {dis, doa: (S, D); az, el, dm: (S,)}, S segments (1 without)."""
        from isdrama.metrics.spatial_ast import _segments, decode_positions, prepare_waveform

        mcfg = self.model.cfg
        seg = self.cfg.segment_seconds
        items: list[tuple[int, np.ndarray]] = []
        for i, w in enumerate(wavs):
            if seg is None:
                items.append((i, prepare_waveform(w, sample_rate, mcfg)))
            else:
                items.extend((i, s) for s in _segments(prepare_waveform(w, sample_rate, mcfg, crop=False), mcfg, seg))
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("dis", "doa", "az", "el", "dm")}
        device = next(self.model.parameters()).device
        for s in range(0, len(items), self.cfg.batch_size):
            x = torch.from_numpy(np.stack([it[1] for it in items[s : s + self.cfg.batch_size]])).to(device)
            out = self.model(x)
            pos = decode_positions(out, mcfg)
            for k, v in (
                ("dis", out.distance_token),
                ("doa", out.doa_token),
                ("az", pos.azimuth_deg),
                ("el", pos.elevation_deg),
                ("dm", pos.distance_m),
            ):
                parts[k].append(v.float().cpu())
        cat = {k: torch.cat(v).numpy() for k, v in parts.items()}
        owner = np.array([it[0] for it in items])
        return [{k: v[owner == i] for k, v in cat.items()} for i in range(len(wavs))]

    def update(
        self,
        gt: torch.Tensor,
        gen: torch.Tensor,
        sample_rate: int,  # type: ignore[override]
        gt_lengths: torch.Tensor,
        gen_lengths: torch.Tensor,
    ) -> None:
        """gt, gen (B, 2, N*) zero-padded binaural with true lengths (B,)."""
        from isdrama.metrics.spatial_ast import angular_error_deg, token_cosine

        def arrays(wav, lengths):
            wav = wav.detach().float().cpu().numpy()
            return [wav[i, :, : int(n)] for i, n in enumerate(lengths)]

        a = self._embed(arrays(gt, gt_lengths), sample_rate)
        b = self._embed(arrays(gen, gen_lengths), sample_rate)
        wrap = self.cfg.wrap
        vals: dict[str, list[float]] = {k: [] for k in self.keys}
        for g, h in zip(a, b):
            s = min(len(g["doa"]), len(h["doa"]))  # segments paired in order
            if self.cfg.segment_seconds is None:  # published: one (1, D) array per file
                vals["ang_cos"].append(token_cosine(g["doa"], h["doa"], wrap))
                vals["dis_cos"].append(token_cosine(g["dis"], h["dis"], wrap))
            else:
                vals["ang_cos"].append(float(np.mean([token_cosine(g["doa"][j], h["doa"][j], wrap) for j in range(s)])))
                vals["dis_cos"].append(float(np.mean([token_cosine(g["dis"][j], h["dis"][j], wrap) for j in range(s)])))
            if self.heads:
                e = angular_error_deg(
                    *(torch.from_numpy(x[k][:s]) for x, k in ((g, "az"), (g, "el"), (h, "az"), (h, "el")))
                )
                vals["angle_error_deg"].append(float(e.mean()))
                vals["distance_error_m"].append(float(np.mean(np.abs(g["dm"][:s] - h["dm"][:s]))))
        MeanOfItems.update(self, vals)


class SpeechState(MeanOfItems):
    """CER/WER, SIM (to prompt and to ground truth), FFE/GPE/VDE of generated lines.

    ``metrics`` is a subset of ("cer", "sim", "ffe"); one :class:`SpeechMetrics` suite per metric
    (so an item one metric cannot score keeps the others, as in the evaluation pipeline).
    ``unavailable`` maps a metric whose backend cannot run here to the reason (its keys stay
    uncounted); ``problems`` lists items a metric could not score (InvalidAudio / InvalidText).
    """

    def __init__(self, metrics: Sequence[str], cfg=None, **kwargs):
        from isdrama.metrics.speech import SpeechMetrics, SpeechMetricsConfig

        super().__init__(SPEECH_KEYS, **kwargs)
        base = cfg or SpeechMetricsConfig()
        self.suites = {m: SpeechMetrics(replace(base, metrics=(m,))) for m in metrics}
        self.unavailable: dict[str, str] = {}
        self.problems: list[str] = []
        self._refresh_unavailable()

    def _refresh_unavailable(self) -> None:
        for m, suite in list(self.suites.items()):
            if m in suite.unavailable:
                self.unavailable[m] = suite.unavailable[m]
                del self.suites[m]

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(self.suites)

    def update(self, items: Sequence) -> None:  # type: ignore[override]
        """items: :class:`isdrama.metrics.speech.SpeechItem` (numpy waveforms at their own rates)."""
        from isdrama.metrics.speech import InvalidAudio, InvalidText

        rows: list[dict] = []
        for metric, suite in self.suites.items():
            try:
                rows.extend(suite.score(items))
            except (InvalidAudio, InvalidText):  # find the item(s): score one at a time
                for it in items:
                    try:
                        rows.extend(suite.score([it]))
                    except (InvalidAudio, InvalidText) as err:
                        self.problems.append(f"{metric}: {err}")
        self._refresh_unavailable()
        values = {k: [float(r[k]) for r in rows if r.get(k) is not None] for k in SPEECH_KEYS}
        MeanOfItems.update(self, {k: v for k, v in values.items() if v})
