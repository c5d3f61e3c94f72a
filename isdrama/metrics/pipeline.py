"""The evaluation pipeline: paired files -> the seven metrics (and readable extras) -> EvaluationResult.

Metric names in results:
    ipd_mae, ild_mae            IPD/ILD MAE (reference mode: the published x100 unit; corrected: rad, dB)
    ang_cos, dis_cos            SpatialAST DOA / distance token cosine
    angle_error_deg, distance_error_m   decoded-position errors (need the checkpoint's heads)
    cer, wer                    ASR error rates against the reference text
    sim_prompt, sim_gt          speaker similarity to the prompt and to the ground truth
    ffe, gpe, vde               F0 frame error and its parts (channel average)

A metric whose model is not available is skipped with the reason, never given a made-up value.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from isdrama.metrics.pairing import FilePair
from isdrama.metrics.report import EvaluationResult
from isdrama.metrics.spatial import SpatialMAEConfig, spatial_mae_files
from isdrama.metrics.spatial_ast import SpatialASTMetricConfig

log = logging.getLogger(__name__)

#: The seven metrics of the paper and the names the CLI accepts.
METRIC_GROUPS = {
    "ipd": "spatial",
    "ild": "spatial",
    "ang": "spatial_ast",
    "dis": "spatial_ast",
    "cer": "speech",
    "sim": "speech",
    "ffe": "speech",
}
ALL_METRICS = tuple(METRIC_GROUPS)


@dataclass
class EvalConfig:
    """What to compute and how.

    Args:
        metrics: subset of ALL_METRICS.
        mode: "corrected" (default; wrapped phase, per-frame mean, no length dependence, no
            phase-wrap quirk) or "reference" (the published script's numbers).
        spatial_ast_checkpoint: the BAT finetuned SpatialAST checkpoint (ANG/DIS); None skips them.
        spatial / spatial_ast / speech: per-group settings (their ``mode`` is set from ``mode``).
        progress: progress bars.
    """

    metrics: tuple[str, ...] = ALL_METRICS
    mode: str = "corrected"
    spatial_ast_checkpoint: Optional[str] = None
    spatial: SpatialMAEConfig = field(default_factory=SpatialMAEConfig)
    spatial_ast: SpatialASTMetricConfig = field(default_factory=SpatialASTMetricConfig)
    speech: Optional[object] = None  # SpeechMetricsConfig; built lazily (heavy imports)
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(ALL_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")
        if self.mode not in ("reference", "corrected"):
            raise ValueError(f"mode must be 'reference' or 'corrected', got {self.mode!r}")
        self.spatial.mode = self.mode
        self.spatial_ast.mode = self.mode


def _run_spatial(pairs: Sequence[FilePair], cfg: EvalConfig, result: EvaluationResult) -> None:
    res = spatial_mae_files(
        [p.gt for p in pairs],
        [p.infer for p in pairs],
        cfg.spatial,
        names=[p.name for p in pairs],
        progress=cfg.progress,
    )
    for i, pair in enumerate(pairs):
        if "ipd" in cfg.metrics:
            result.add(pair.name, "ipd_mae", res.ipd[i] * res.scale)
        if "ild" in cfg.metrics:
            result.add(pair.name, "ild_mae", res.ild[i] * res.scale)
    ipd_bands, ild_bands = res.band_profile()
    if "ipd" in cfg.metrics:
        result.band_errors["ipd"] = ipd_bands
    if "ild" in cfg.metrics:
        result.band_errors["ild"] = ild_bands


def _run_spatial_ast(pairs: Sequence[FilePair], cfg: EvalConfig, result: EvaluationResult) -> None:
    from isdrama.metrics.spatial_ast import load_spatial_ast, spatial_ast_scores

    wanted = [m for m in ("ang", "dis") if m in cfg.metrics]
    if not cfg.spatial_ast_checkpoint:
        for m in wanted:
            result.skipped[f"{m}_cos"] = (
                "no SpatialAST checkpoint: pass --spatial-ast-checkpoint PATH/finetuned.pth (BAT's released model)"
            )
        return
    model, report = load_spatial_ast(cfg.spatial_ast_checkpoint, device=cfg.spatial_ast.device)
    res = spatial_ast_scores(
        model, [p.gt for p in pairs], [p.infer for p in pairs], cfg.spatial_ast, report=report, progress=cfg.progress
    )
    for i, pair in enumerate(pairs):
        if "ang" in wanted:
            result.add(pair.name, "ang_cos", res.ang_cos[i])
        if "dis" in wanted:
            result.add(pair.name, "dis_cos", res.dis_cos[i])
        if report.heads_loaded:
            result.add(pair.name, "angle_error_deg", res.angle_error_deg[i])
            result.add(pair.name, "distance_error_m", res.distance_error_m[i])
    if report.heads_loaded:
        result.angle_errors = np.asarray(res.angle_error_deg)
    else:
        result.skipped["angle_error_deg"] = f"{cfg.spatial_ast_checkpoint} has no classification heads"


#: speech result keys copied into the report
SPEECH_KEYS = ("cer", "wer", "sim_prompt", "sim_gt", "ffe", "gpe", "vde")


def _run_speech(pairs: Sequence[FilePair], cfg: EvalConfig, result: EvaluationResult) -> None:
    from tqdm import tqdm

    from isdrama.data.audio import read_audio
    from isdrama.metrics.speech import InvalidAudio, InvalidText, SpeechItem, SpeechMetrics, SpeechMetricsConfig

    wanted = tuple(m for m in ("cer", "sim", "ffe") if m in cfg.metrics)
    base = cfg.speech or SpeechMetricsConfig()
    # one suite per metric, so a file that one metric cannot score (e.g. no speech found for SIM)
    # still gets the others; each suite builds only its own backend
    suites = {m: SpeechMetrics(replace(base, metrics=(m,))) for m in wanted}
    for metric, suite in suites.items():
        if metric in suite.unavailable:
            result.skipped[metric] = suite.unavailable[metric]
    active = {m: s for m, s in suites.items() if m not in s.unavailable}
    if "cer" in active and not any(p.text for p in pairs):
        result.skipped["cer"] = "no reference texts (pass --texts FILE.json or put NAME.txt beside gt/NAME.wav)"
        del active["cer"]
    if "sim" in active and not any(p.prompt for p in pairs):
        log.info("no prompt audio given: SIM is computed to the ground truth only (sim_gt)")
    if not active:
        return
    for pair in tqdm(pairs, desc="speech metrics", unit="file", disable=not cfg.progress):
        gen, gen_sr = read_audio(pair.infer)
        gt, gt_sr = read_audio(pair.gt)
        prompt, prompt_sr = read_audio(pair.prompt) if pair.prompt is not None else (None, None)
        item = SpeechItem(
            pair.name, gen, gen_sr, gt=gt, gt_sr=gt_sr, prompt=prompt, prompt_sr=prompt_sr, text=pair.text
        )
        for metric, suite in active.items():
            try:
                row = suite.score([item])[0]
            except (InvalidAudio, InvalidText) as exc:  # this file cannot be scored by this metric
                result.problems.setdefault(pair.name, []).append(f"{metric}: {exc}")
                continue
            for key in SPEECH_KEYS:
                if key in row and row[key] is not None:
                    result.add(pair.name, key, row[key])
    for metric, suite in active.items():  # a backend may fail mid-run
        if metric in suite.unavailable:
            result.skipped[metric] = suite.unavailable[metric]


def evaluate_pairs(pairs: Sequence[FilePair], cfg: EvalConfig) -> EvaluationResult:
    """Compute the configured metrics over ``pairs``; returns a finalised EvaluationResult."""
    result = EvaluationResult(
        settings={
            "mode": cfg.mode,
            "metrics": ",".join(cfg.metrics),
            "files": len(pairs),
            "spatial_ast_checkpoint": cfg.spatial_ast_checkpoint or "none",
        }
    )
    groups = {METRIC_GROUPS[m] for m in cfg.metrics}
    if "spatial" in groups:
        _run_spatial(pairs, cfg, result)
    if "spatial_ast" in groups:
        _run_spatial_ast(pairs, cfg, result)
    if "speech" in groups:
        _run_speech(pairs, cfg, result)
    for pair in pairs:
        result.per_file.setdefault(pair.name, {})
    return result.finalize()


def load_texts(path: Optional[Path], gt_dir: Path) -> dict[str, str]:
    """Reference transcripts: a JSON {name: text}, a folder of NAME.txt, and NAME.txt beside gt wavs."""
    texts: dict[str, str] = {}
    for txt in sorted(Path(gt_dir).rglob("*.txt")):
        texts[str(txt.relative_to(gt_dir).with_suffix(""))] = txt.read_text(encoding="utf-8").strip()
    if path is None:
        return texts
    path = Path(path)
    if path.is_dir():
        for txt in sorted(path.rglob("*.txt")):
            texts[str(txt.relative_to(path).with_suffix(""))] = txt.read_text(encoding="utf-8").strip()
        return texts
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: texts file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping file names to transcripts")
    texts.update(data)
    return texts
