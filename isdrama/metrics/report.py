"""Aggregate per-file metric values and write the evaluation report (JSON, CSV, Markdown, PNG)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from isdrama.utils.io import atomic_path, atomic_write_json, atomic_write_text


@dataclass
class Aggregate:
    """Mean of a metric over files with a 95% confidence interval (Student t)."""

    mean: float
    ci95: float
    n: int
    std: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95, "n": self.n, "std": self.std}


def aggregate(values: list[float], confidence: float = 0.95) -> Aggregate:
    """Mean and half-width of the ``confidence`` interval of the mean (NaN values ignored)."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = arr.size
    if n == 0:
        return Aggregate(float("nan"), float("nan"), 0, float("nan"))
    mean = float(arr.mean())
    if n == 1:
        return Aggregate(mean, float("nan"), 1, 0.0)
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return Aggregate(mean, half, n, std)


@dataclass
class EvaluationResult:
    """Per-file values, aggregates, arrays for plots and the metrics that were skipped (with why)."""

    per_file: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)  # file -> metrics it could not get
    settings: dict[str, object] = field(default_factory=dict)
    band_errors: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. "ipd" -> (128,)
    angle_errors: Optional[np.ndarray] = None  # degrees per file

    def add(self, name: str, metric: str, value: float) -> None:
        self.per_file.setdefault(name, {})[metric] = float(value)

    def metrics(self) -> list[str]:
        seen: dict[str, None] = {}
        for values in self.per_file.values():
            for k in values:
                seen.setdefault(k, None)
        return list(seen)

    def finalize(self) -> "EvaluationResult":
        self.aggregates = {
            m: aggregate([v.get(m, float("nan")) for v in self.per_file.values()]) for m in self.metrics()
        }
        return self

    def to_json(self) -> dict:
        return {
            "settings": self.settings,
            "aggregate": {k: v.as_dict() for k, v in self.aggregates.items()},
            "skipped": self.skipped,
            "problems": self.problems,
            "per_file": self.per_file,
        }

    def markdown(self) -> str:
        lines = ["| metric | mean | 95% CI | n |", "|---|---|---|---|"]
        for m, agg in self.aggregates.items():
            lines.append(f"| {m} | {agg.mean:.4f} | ±{agg.ci95:.4f} | {agg.n} |")
        if self.skipped:
            lines += ["", "Skipped metrics:"] + [f"- {m}: {why}" for m, why in self.skipped.items()]
        if self.problems:
            lines += ["", f"Files a metric could not score ({len(self.problems)}; left out of that mean):"]
            lines += [f"- {name}: {'; '.join(msgs)}" for name, msgs in list(self.problems.items())[:20]]
        if self.settings:
            lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())]
        return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_report(result: EvaluationResult, out_dir: Path, plots: bool = True) -> list[Path]:
    """Write results.json, per_file.csv, summary.csv, report.md (+ PNG plots). Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = result.metrics()
    written = [out_dir / n for n in ("results.json", "per_file.csv", "summary.csv", "report.md")]
    atomic_write_json(written[0], result.to_json())
    atomic_write_text(
        written[1],
        _csv_text(
            ["name"] + metrics, [[name] + [vals.get(m, "") for m in metrics] for name, vals in result.per_file.items()]
        ),
    )
    atomic_write_text(
        written[2],
        _csv_text(
            ["metric", "mean", "ci95", "n", "std"],
            [[m, a.mean, a.ci95, a.n, a.std] for m, a in result.aggregates.items()],
        ),
    )
    atomic_write_text(written[3], result.markdown())
    if plots:
        written += write_plots(result, out_dir)
    return written


def write_plots(result: EvaluationResult, out_dir: Path) -> list[Path]:
    """IPD/ILD error per mel band and a histogram of angle errors, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if result.band_errors:
        fig, axes = plt.subplots(len(result.band_errors), 1, figsize=(7, 2.6 * len(result.band_errors)), squeeze=False)
        for ax, (name, err) in zip(axes[:, 0], result.band_errors.items()):
            ax.plot(np.arange(len(err)), err)
            ax.set_title(f"{name.upper()} mean absolute error per mel band")
            ax.set_xlabel("mel band (50-14000 Hz)")
            ax.set_ylabel("MAE")
        fig.tight_layout()
        paths.append(_save_fig(fig, out_dir / "band_errors.png"))
        plt.close(fig)
    if result.angle_errors is not None and len(result.angle_errors):
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(result.angle_errors, bins=36, range=(0, 180))
        ax.set_xlabel("angle error between gt and generated direction (degrees)")
        ax.set_ylabel("files")
        fig.tight_layout()
        paths.append(_save_fig(fig, out_dir / "angle_errors.png"))
        plt.close(fig)
    return paths


def _save_fig(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
