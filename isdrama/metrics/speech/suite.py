"""All speech metrics (CER/WER, SIM, FFE) for a list of generated files, skipping any metric
whose backend is unavailable with the reason (``MetricUnavailable``), never inventing a value.

Per item: generated audio (required), ground-truth audio, prompt audio and reference text
(each optional; a metric that needs a missing input is left out of that item's row).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from isdrama.metrics.speech.asr import AsrBackend, AsrConfig, build_asr
from isdrama.metrics.speech.audio import to_mono
from isdrama.metrics.speech.cer import TextScore, aggregate, score_text
from isdrama.metrics.speech.errors import InvalidAudio, InvalidText, MetricUnavailable
from isdrama.metrics.speech.ffe import FfeConfig, ffe
from isdrama.metrics.speech.speaker import SpeakerConfig, SpeakerEncoder, build_speaker_encoder, cosine

METRICS = ("cer", "sim", "ffe")


@dataclass
class SpeechMetricsConfig:
    """Which speech metrics to run and with which backends.

    Attributes:
        metrics: subset of ("cer", "sim", "ffe").
        lang: text language for CER/WER normalisation: "zh", "en" or "auto" (per reference).
        cer_on_gt: also transcribe the ground truth (the paper's "GT" CER row).
        asr, speaker, ffe: backend settings.
    """

    metrics: tuple[str, ...] = METRICS
    lang: str = "auto"
    cer_on_gt: bool = False
    asr: AsrConfig = field(default_factory=AsrConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    ffe: FfeConfig = field(default_factory=FfeConfig)


@dataclass
class SpeechItem:
    """One generated file and what it is compared with; each wav has its own sample rate."""

    name: str
    gen: np.ndarray
    gen_sr: int
    gt: np.ndarray | None = None
    gt_sr: int | None = None
    prompt: np.ndarray | None = None
    prompt_sr: int | None = None
    text: str | None = None


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Attach the item name to an InvalidAudio/InvalidText raised inside."""
    try:
        yield
    except (InvalidAudio, InvalidText) as err:
        err.item = name  # type: ignore[attr-defined]
        raise


class SpeechMetrics:
    """Builds the backends once; ``score(items)`` returns one row (dict) per item.

    ``unavailable`` maps each metric that cannot run here to the reason.
    """

    def __init__(self, cfg: SpeechMetricsConfig | None = None) -> None:
        self.cfg = cfg or SpeechMetricsConfig()
        bad = set(self.cfg.metrics) - set(METRICS)
        if bad:
            raise ValueError(f"unknown speech metric(s) {sorted(bad)}; choose from {METRICS}")
        self.unavailable: dict[str, str] = {}
        self.asr: AsrBackend | None = None
        self.speaker: SpeakerEncoder | None = None
        if "cer" in self.cfg.metrics:
            try:
                self.asr = build_asr(self.cfg.asr)
            except MetricUnavailable as err:
                self.unavailable["cer"] = str(err)
        if "sim" in self.cfg.metrics:
            try:
                self.speaker = build_speaker_encoder(self.cfg.speaker)
            except MetricUnavailable as err:
                self.unavailable["sim"] = str(err)

    def score(self, items: Sequence[SpeechItem]) -> list[dict]:
        """Rows with keys ``name`` and, where computable: ``transcript``, ``cer``, ``wer``,
        ``gt_transcript``, ``gt_cer``, ``gt_wer``, ``sim_prompt``, ``sim_gt``, ``ffe``,
        ``gpe``, ``vde``. A metric raising ``MetricUnavailable`` mid-run is recorded in
        ``unavailable`` and dropped from all rows. Bad audio or text raises ``InvalidAudio`` /
        ``InvalidText`` naming the item."""
        try:
            return self._score(items)
        except (InvalidAudio, InvalidText) as err:
            raise type(err)(f"{getattr(err, 'item', '?')}: {err}") from err

    def _score(self, items: Sequence[SpeechItem]) -> list[dict]:
        rows = [{"name": it.name} for it in items]
        if self.asr is not None:
            self._cer(items, rows)
        if self.speaker is not None:
            self._sim(items, rows)
        if "ffe" in self.cfg.metrics:
            try:
                for it, row in zip(items, rows):
                    if it.gt is not None:
                        with _naming(it.name):
                            row.update(ffe(it.gt, it.gen, it.gt_sr, self.cfg.ffe, sr_generated=it.gen_sr).as_dict())
            except MetricUnavailable as err:
                self.unavailable["ffe"] = str(err)
                for row in rows:
                    for k in ("ffe", "gpe", "vde", "ffe_frames"):
                        row.pop(k, None)
        return rows

    def _transcribe(self, wavs: list[np.ndarray], srs: list[int]) -> list[str]:
        out: list[str] = [""] * len(wavs)
        for sr in sorted(set(srs)):  # one call per sample rate, original order kept
            idx = [i for i, s in enumerate(srs) if s == sr]
            for i, text in zip(idx, self.asr.transcribe([wavs[i] for i in idx], sr)):
                out[i] = text
        return out

    def _cer(self, items: Sequence[SpeechItem], rows: list[dict]) -> None:
        sel = [i for i, it in enumerate(items) if it.text]
        if not sel:
            return
        for i in sel:  # validate first so that an error names the item
            with _naming(items[i].name):
                to_mono(items[i].gen, "generated audio")
                if self.cfg.cer_on_gt and items[i].gt is not None:
                    to_mono(items[i].gt, "ground-truth audio")
        hyps = self._transcribe([items[i].gen for i in sel], [items[i].gen_sr for i in sel])
        for i, hyp in zip(sel, hyps):
            with _naming(items[i].name):
                s = score_text(items[i].text, hyp, self.cfg.lang)
            rows[i].update(transcript=hyp, cer=s.cer, wer=s.wer)
        if self.cfg.cer_on_gt:
            gsel = [i for i in sel if items[i].gt is not None]
            if gsel:
                ghyps = self._transcribe([items[i].gt for i in gsel], [items[i].gt_sr for i in gsel])
                for i, hyp in zip(gsel, ghyps):
                    with _naming(items[i].name):
                        s = score_text(items[i].text, hyp, self.cfg.lang)
                    rows[i].update(gt_transcript=hyp, gt_cer=s.cer, gt_wer=s.wer)

    def _sim(self, items: Sequence[SpeechItem], rows: list[dict]) -> None:
        for it, row in zip(items, rows):
            refs = {"sim_prompt": (it.prompt, it.prompt_sr), "sim_gt": (it.gt, it.gt_sr)}
            refs = {k: v for k, v in refs.items() if v[0] is not None}
            if not refs:
                continue
            with _naming(it.name):
                gen_emb = self.speaker.embed([it.gen], it.gen_sr)[0]
                for key, (wav, sr) in refs.items():
                    row[key] = float(cosine(gen_emb, self.speaker.embed([wav], sr)[0]))


def summarize(rows: Sequence[dict]) -> dict[str, float]:
    """Mean of each numeric metric over the rows that have it (NaN GPE values ignored)."""
    keys = ("cer", "wer", "gt_cer", "gt_wer", "sim_prompt", "sim_gt", "ffe", "gpe", "vde")
    out: dict[str, float] = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[k] = float(vals.mean())
            out[f"{k}_n"] = float(vals.size)
    return out


__all__ = ["SpeechItem", "SpeechMetrics", "SpeechMetricsConfig", "summarize", "TextScore", "aggregate"]
