"""What `python infer.py` and `isdrama-infer` run: validate a script, generate, write the drama."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

from isdrama.inference.script import DramaScript, load_script

log = logging.getLogger(__name__)


def describe_script(script: DramaScript) -> str:
    """A few lines saying what a validated script holds (for --dry-run)."""
    kinds = ", ".join(f"{k} x{sum(ln.pose_kind == k for ln in script.lines)}" for k in script.pose_kinds)
    out = [
        f"{script.path}: valid drama script",
        f"  speakers: {', '.join(f'{n} ({s.language}, {s.prompt.name})' for n, s in script.speakers.items())}",
        f"  lines: {len(script.lines)} ({kinds})",
    ]
    for ln in script.lines:
        out.append(f"  [{ln.index}] {ln.speaker} ({ln.language}, {ln.pose_kind}, pause {ln.pause:g} s): {ln.text[:60]}")
    return "\n".join(out)


def infer_script(
    script_path: Path | str,
    checkpoint: Path | str,
    out: Path | str,
    codec: Optional[Path | str] = None,
    device: str = "cpu",
    generation: Optional[Mapping[str, Any]] = None,
    mux_video: Optional[Path | str] = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate the drama of a script into ``out``; returns the written paths."""
    from isdrama.inference.generator import DramaGenerator, default_settings

    script = load_script(script_path)
    settings = default_settings(**dict(generation or {}))
    gen = DramaGenerator.from_checkpoint(checkpoint, codec=codec, device=device, settings=settings)
    drama = gen.generate(script, progress=progress)
    video = Path(mux_video) if mux_video else None
    paths = drama.save(out, video=video)
    log.info("drama of %.1f s (%d lines) -> %s", drama.seconds, len(script.lines), paths["drama"])
    return paths


def run_infer(cfg) -> int:
    """The Hydra entry (infer.py): configs/infer.yaml."""
    from omegaconf import OmegaConf

    from isdrama.inference.script import ScriptError

    try:
        script = load_script(cfg.script)
    except ScriptError as exc:
        print(f"error: {exc}")
        return 2
    if cfg.dry_run:
        print(describe_script(script))
        return 0
    out = cfg.out if cfg.out is not None else cfg.paths.output_dir
    paths = infer_script(
        cfg.script,
        cfg.checkpoint,
        out,
        codec=cfg.codec_checkpoint,
        device=cfg.device,
        generation=OmegaConf.to_container(cfg.generation, resolve=True),
        mux_video=cfg.mux_video,
        progress=bool(cfg.progress),
    )
    print(paths["report"].read_text())
    print(f"drama: {paths['drama']}\nmanifest: {paths['manifest']}\nreport: {paths['report']}")
    return 0


__all__ = ["describe_script", "infer_script", "run_infer"]
