"""Score a codec's round trip (encode -> tokens -> decode) on held-out lines of a dataset split.

What the codec issue's acceptance asks, per codec checkpoint (``bench/codec_acceptance.py``):
Whisper CER of the English lines, resemblyzer SIM of the round trip to the original, the share of
lateral lines (> 22.5 degrees off the median plane, from the pose) whose broadband ILD / GCC-PHAT
ITD sign equals the original's, corrected-mode ILD and IPD MAE, and the mean broadband ILD error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class RoundTripReport:
    """Scores of one codec on one split (see the module docstring); ``per_line`` rows by name."""

    codec: str
    bandwidth: float
    lines: int
    summary: dict[str, float] = field(default_factory=dict)
    per_line: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "bandwidth": self.bandwidth,
            "lines": self.lines,
            "summary": self.summary,
            "extra": self.extra,
            "per_line": self.per_line,
        }


def _line_name(line) -> str:
    from isdrama.inference.resynth import line_name

    return line_name(line)


def round_trip_lines(codec, lines: Sequence, out: Path, progress: bool = True) -> list[str]:
    """Write ``out/gt/NAME.wav`` (the original, 48 kHz) and ``out/infer/NAME.wav`` (its round trip
    at the codec's bandwidth, resampled back to 48 kHz) for every line; returns the names."""
    import shutil

    import torch
    import torchaudio.functional as AF
    from tqdm import tqdm

    from isdrama.data.audio import read_audio, write_audio
    from isdrama.data.schema import DATA_SAMPLE_RATE
    from isdrama.utils.io import atomic_path

    names = []
    for line in tqdm(lines, desc="round trip", unit="line", disable=not progress):
        name = _line_name(line)
        wav, _ = read_audio(line.wav_path, expect_sr=DATA_SAMPLE_RATE, expect_channels=2)
        x = codec.prepare_audio(wav, DATA_SAMPLE_RATE)
        with torch.no_grad():
            y = codec.decode(codec.encode(x))[0, :, : codec.num_frames(x.shape[-1]) * codec.hop_length]
        y = AF.resample(y.cpu(), codec.sample_rate, DATA_SAMPLE_RATE)[:, : wav.shape[1]].numpy()
        write_audio(out / "infer" / f"{name}.wav", np.clip(y, -1, 1), DATA_SAMPLE_RATE)
        with atomic_path(out / "gt" / f"{name}.wav", suffix=".wav") as tmp:
            shutil.copyfile(line.wav_path, tmp)
        names.append(name)
    return names


def _signs(values: Sequence[float]) -> np.ndarray:
    return np.sign(np.asarray(values, dtype=np.float64))


def evaluate_round_trip(
    codec_config: dict,
    root: Path,
    out: Path,
    split: str = "test",
    limit: Optional[int] = None,
    margin_deg: float = 22.5,
    cer_language: str = "en",
    cer_on_original: bool = True,
    progress: bool = True,
) -> RoundTripReport:
    """Round-trip the ``split`` lines of ``root`` through the codec of ``codec_config`` and score them.

    CER is computed on the lines whose language is ``cer_language`` (and of the originals too with
    ``cer_on_original``: the same for every codec, so one run is enough); every other score on all
    lines. Writes ``out/gt``, ``out/infer`` and ``out/report.json``.
    """
    from isdrama.codec import BinauralCodec, CodecConfig
    from isdrama.data.audio import read_audio
    from isdrama.inference.resynth import select_lines
    from isdrama.metrics.interaural import broadband_ild_db, gcc_phat_itd, lateral_side
    from isdrama.metrics.pairing import FilePair
    from isdrama.metrics.pipeline import EvalConfig, evaluate_pairs
    from isdrama.metrics.speech import SpeechItem, SpeechMetrics, SpeechMetricsConfig
    from isdrama.utils.io import atomic_write_json

    root, out = Path(root), Path(out)
    lines, _ = select_lines(root, split, limit, None, None, None, None)
    if not lines:
        raise ValueError(f"{root}: no lines in split {split!r}")
    options = {k: v for k, v in dict(codec_config).items() if k != "frame_rate"}
    codec = BinauralCodec(CodecConfig.from_dict(options)).eval()
    if codec.uninitialised_layers:
        raise ValueError(
            f"codec {codec.weights_source}: RVQ layers {codec.uninitialised_layers} were never initialised"
        )
    # speech suites first: a missing backend fails before any audio is encoded
    sim_suite = SpeechMetrics(SpeechMetricsConfig(metrics=("sim",)))
    cer_suite = SpeechMetrics(SpeechMetricsConfig(metrics=("cer",), lang=cer_language, cer_on_gt=cer_on_original))
    for suite, metric in ((sim_suite, "sim"), (cer_suite, "cer")):
        if metric in suite.unavailable:
            raise RuntimeError(f"{metric} is unavailable: {suite.unavailable[metric]}")
    names = round_trip_lines(codec, lines, out, progress)
    report = RoundTripReport(codec=codec.weights_source, bandwidth=codec.config.bandwidth, lines=len(lines))
    report.extra = {"split": split, "root": str(root), "config_key": codec.config_key()}

    # spatial: corrected-mode IPD / ILD MAE over every line
    pairs = [FilePair(n, out / "gt" / f"{n}.wav", out / "infer" / f"{n}.wav") for n in names]
    spatial = evaluate_pairs(pairs, EvalConfig(metrics=("ipd", "ild"), mode="corrected", progress=progress))
    for name, row in spatial.per_file.items():
        report.per_line.setdefault(name, {}).update({k: float(v) for k, v in row.items()})

    # per line: broadband cues, the pose side, SIM of the round trip to the original (all lines),
    # CER (lines in cer_language)
    lateral = []
    for line, name in zip(lines, names):
        gt, gt_sr = read_audio(out / "gt" / f"{name}.wav")
        rt, rt_sr = read_audio(out / "infer" / f"{name}.wav")
        side = lateral_side(np.load(line.pose_path, allow_pickle=False), margin_deg) if line.pose_path else None
        row = report.per_line.setdefault(name, {})
        row.update(
            language=line.language,
            side=side,
            ild_gt_db=broadband_ild_db(gt),
            ild_rt_db=broadband_ild_db(rt),
            itd_gt_s=gcc_phat_itd(gt, gt_sr),
            itd_rt_s=gcc_phat_itd(rt, rt_sr),
        )
        if side is not None:
            lateral.append(row)
        item = SpeechItem(name, rt, rt_sr, gt=gt, gt_sr=gt_sr, text=line.text)
        row["sim"] = sim_suite.score([item])[0].get("sim_gt")
        if line.language == cer_language:
            scored = cer_suite.score([item])[0]
            row.update(cer=scored.get("cer"), gt_cer=scored.get("gt_cer"), transcript=scored.get("transcript"))

    rows = list(report.per_line.values())

    def mean(key: str) -> float:
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(values)) if values else float("nan")

    s = report.summary
    s["sim"] = mean("sim")
    s["cer"] = mean("cer")
    s["cer_original"] = mean("gt_cer")
    s["english_lines"] = float(sum(1 for r in rows if r.get("cer") is not None))
    s["ild_mae_db"] = mean("ild_mae")
    s["ipd_mae_rad"] = mean("ipd_mae")
    s["lateral_lines"] = float(len(lateral))
    if lateral:
        ild_gt, ild_rt = _signs([r["ild_gt_db"] for r in lateral]), _signs([r["ild_rt_db"] for r in lateral])
        itd_gt, itd_rt = _signs([r["itd_gt_s"] for r in lateral]), _signs([r["itd_rt_s"] for r in lateral])
        side = np.asarray([r["side"] for r in lateral], dtype=np.float64)
        s["ild_sign_agreement"] = float((ild_gt == ild_rt).mean())
        s["itd_sign_agreement"] = float((itd_gt == itd_rt).mean())
        s["ild_sign_vs_pose_original"] = float((ild_gt == side).mean())
        s["ild_sign_vs_pose_round_trip"] = float((ild_rt == side).mean())
        s["broadband_ild_error_db"] = float(np.mean([abs(r["ild_gt_db"] - r["ild_rt_db"]) for r in lateral]))
    atomic_write_json(out / "report.json", json.loads(json.dumps(report.to_dict(), default=float)))
    return report
