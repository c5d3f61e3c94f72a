"""The results table in the layout of the paper's Table 3: the drama model in each pose mode and
the cascade baseline, each written by :func:`~isdrama.inference.batch.generate_split` and scored
by ``isdrama-eval`` on the same held-out lines.

    OUT/<system>/{gt,infer,prompt,texts.json}     the batch folder of each system
    OUT/<system>/eval/                            its isdrama-eval report (results.json, report.md)
    OUT/table.md, OUT/table.json                  the table
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

#: rows: system -> label
SYSTEM_LABELS = {
    "cascade": "Spatialization (GT mono + HRTF renderer)",
    "geo": "isdrama, geometric pose",
    "video": "isdrama, video pose",
    "text": "isdrama, text pose",
}
#: columns: label -> (results.json aggregate key, digits)
COLUMNS = {
    "IPD MAE": ("ipd_mae", 3),
    "ILD MAE": ("ild_mae", 3),
    "ANG Cos": ("ang_cos", 2),
    "DIS Cos": ("dis_cos", 2),
    "CER": ("cer", 3),
    "SIM": ("sim_prompt", 3),
    "FFE": ("ffe", 3),
}


def evaluate_folder(
    folder: Path,
    root: Path,
    split: str,
    splits_file: Optional[Path],
    spatial_ast_checkpoint: Optional[str],
    metrics: Optional[Sequence[str]],
    progress: bool,
) -> dict:
    """``isdrama-eval`` on a batch folder (its CLI, so the numbers are the CLI's); returns results.json."""
    from isdrama.metrics.cli import main as eval_main

    argv = [
        str(folder / "gt"),
        str(folder / "infer"),
        "--prompt-dir",
        str(folder / "prompt"),
        "--texts",
        str(folder / "texts.json"),
        "--splits",
        str(splits_file or root),
        "--split",
        split,
        "--out",
        str(folder / "eval"),
    ]
    if spatial_ast_checkpoint:
        argv += ["--spatial-ast-checkpoint", str(spatial_ast_checkpoint)]
    if metrics:
        argv += ["--metrics", ",".join(metrics)]
    if not progress:
        argv.append("--quiet")
    code = eval_main(argv)
    if code != 0:
        raise RuntimeError(f"isdrama-eval failed on {folder} (exit {code})")
    return json.loads((folder / "eval" / "results.json").read_text())


def format_table(results: dict[str, dict], n_lines: dict[str, int], sides: Optional[dict[str, dict]] = None) -> str:
    """Markdown table from system -> results.json (+ the ILD-sign agreement of each system); a
    metric that was skipped shows as '-'."""
    sides = sides or {}
    head = "| Method | " + " | ".join(COLUMNS) + " | ILD sign = pose | lines |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    skipped: dict[str, str] = {}
    for system, res in results.items():
        agg = res.get("aggregate", {})
        cells = []
        for key, digits in COLUMNS.values():
            value = agg.get(key, {}).get("mean")
            cells.append("-" if value is None or value != value else f"{value:.{digits}f}")
        skipped.update(res.get("skipped", {}))
        side = sides.get(system, {})
        share = side.get("ild_sign_matches_pose")
        cells.append("-" if share is None else f"{100 * share:.1f} % of {side['lateral_lines']}")
        rows.append(f"| {SYSTEM_LABELS.get(system, system)} | " + " | ".join(cells) + f" | {n_lines[system]} |")
    notes = [
        "",
        "IPD / ILD MAE in isdrama-eval's corrected mode (rad, dB); ANG / DIS need a BAT SpatialAST "
        "checkpoint (--spatial-ast-checkpoint); CER Whisper (faster-whisper), SIM resemblyzer to the prompt, "
        "FFE Praat. ILD sign = pose: lines more than 22.5 degrees off the median plane whose generated "
        "broadband ILD has the side of the line's pose.",
    ]
    if skipped:
        notes += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    return "\n".join(rows + notes) + "\n"


def results_table(
    root: Path,
    out: Path,
    modes: Sequence[str],
    generator=None,
    split: str = "test",
    limit: Optional[int] = None,
    splits_file: Optional[Path] = None,
    spatial_ast_checkpoint: Optional[str] = None,
    metrics: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> Path:
    """Generate, score and tabulate every system of ``modes``; returns OUT/table.md."""
    from isdrama.inference.batch import generate_split, side_agreement
    from isdrama.utils.io import atomic_write_json, atomic_write_text

    root, out = Path(root), Path(out)
    results, counts, sides = {}, {}, {}
    for mode in modes:
        folder = out / mode
        counts[mode] = generate_split(root, folder, mode, generator, split, limit, splits_file, progress)
        results[mode] = evaluate_folder(folder, root, split, splits_file, spatial_ast_checkpoint, metrics, progress)
        sides[mode] = side_agreement(root, folder)
    table = format_table(results, counts, sides)
    atomic_write_text(out / "table.md", table)
    atomic_write_json(
        out / "table.json",
        {m: {"lines": counts[m], "aggregate": results[m].get("aggregate", {}), **sides[m]} for m in modes},
    )
    return out / "table.md"


__all__ = ["COLUMNS", "SYSTEM_LABELS", "evaluate_folder", "format_table", "results_table"]
