"""A generated drama's report from its manifest: per line, what was asked and what came out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.1f}"
    return str(value)


def _content_scale(guidance: dict[str, Any]) -> float:
    """g_c of a manifest's guidance (None there: g)."""
    return guidance["scale"] if guidance.get("content_scale") is None else guidance["content_scale"]


def drama_report(manifest: dict[str, Any]) -> str:
    """Markdown: one row per line (speaker, pose kind, frames and where they came from, the side a
    geometric pose asks for, the generated ILD over the line and its halves), then the settings."""
    rows = [
        "| # | speaker | pose | asked side | seconds (frames from) | ILD dB | 1st half | 2nd half | text |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in manifest["lines"]:
        rows.append(
            f"| {r['index']} | {r['speaker']} | {r['pose_kind']} ({r['pose_branch']}) | {r.get('pose_side') or '-'} | "
            f"{r['end'] - r['start']:.2f} ({r['frames_from']}) | {_fmt(r.get('ild_db'))} | "
            f"{_fmt(r.get('ild_first_half_db'))} | {_fmt(r.get('ild_second_half_db'))} | {r['text'][:50]} |"
        )
    g, m, loud = manifest["guidance"], manifest["model"], manifest.get("loudness", {})
    notes = [
        "",
        f"{manifest['seconds']:.1f} s at {manifest['sample_rate']} Hz binaural; ILD = 10 log10(E_left / E_right) "
        "(+ = louder on the left); asked side: from a geometric pose (None within 22.5 degrees of the median plane).",
        f"Guidance: {g['steps']} Euler steps, g = {g['scale']}, a = {g['alpha']}"
        + (f", no-content branch (g_c = {_content_scale(g)})" if g.get("drops_content") else "")
        + "; loudness "
        f"{_fmt(loud.get('input_lufs'))} -> {loud.get('target_lufs')} LUFS (gain {loud.get('gain_db', 0):+.1f} dB).",
        f"Model {m.get('model')} (sha1 {str(m.get('model_sha1'))[:12]}, step {m.get('model_step')}), codec "
        f"{m.get('codec')} (key {m.get('codec_config_key')}).",
    ]
    return "\n".join(rows + notes) + "\n"


def write_drama_report(out_dir: Path | str) -> Path:
    """OUT/report.md from OUT/manifest.json; returns its path."""
    from isdrama.utils.io import atomic_write_text

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    path = out / "report.md"
    atomic_write_text(path, drama_report(manifest))
    return path


__all__ = ["drama_report", "write_drama_report"]
