"""`isdrama-infer`: drama generation without Hydra (defaults from configs/infer.yaml).

isdrama-infer SCRIPT [--checkpoint CKPT] [--out DIR] [--dry-run] ...   a drama from a script
isdrama-infer batch ROOT OUT --mode geo|video|text|cascade [--split test] ...
                                                a dataset split -> gt/ infer/ prompt/ texts.json
isdrama-infer table ROOT OUT [--checkpoint CKPT] ...
                                                every pose mode + the cascade -> isdrama-eval -> Table 3
isdrama-infer pack --drama EXPORT --codec CODEC --out DIR   half-precision inference checkpoints
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

SUBCOMMANDS = ("batch", "table", "pack")


def _generation_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    g = p.add_argument_group("generation (defaults: configs/infer.yaml)")
    g.add_argument("--steps", type=int, default=defaults["steps"], help="Euler steps")
    g.add_argument("--guidance-scale", type=float, default=defaults["guidance_scale"], help="g")
    g.add_argument("--alpha", type=float, default=defaults["alpha"], help="a: own prompt vs previous line")
    g.add_argument(
        "--content-guidance-scale",
        type=float,
        default=defaults["content_guidance_scale"],
        help="g_c: the words' guidance scale (a model trained to drop the content; default: the model's)",
    )
    g.add_argument("--seed", type=int, default=defaults["seed"], help="line i uses seed + i")
    g.add_argument("--loudness", type=float, default=defaults["loudness_lufs"], help="target LUFS")
    g.add_argument("--speed", type=float, default=defaults["speed"], help="predicted durations / speed")


def _model_args(p: argparse.ArgumentParser, cfg: dict) -> None:
    default_ckpt = str(cfg["checkpoint"]).replace("${paths.root_dir}", str(_root()))
    p.add_argument("--checkpoint", type=Path, default=Path(default_ckpt), help=f"drama model (default {default_ckpt})")
    p.add_argument(
        "--codec", type=Path, default=None, help="codec checkpoint (default: the model's, or codec.pt beside it)"
    )
    p.add_argument("--device", default=cfg["device"], help="cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _root() -> Path:
    from isdrama.utils.config import CONFIG_DIR

    return CONFIG_DIR.parent


def _settings(args: argparse.Namespace, gen_defaults: dict):
    from isdrama.inference.generator import GenerationSettings

    return GenerationSettings(
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        alpha=args.alpha,
        content_guidance_scale=args.content_guidance_scale,
        seed=args.seed,
        loudness_lufs=args.loudness,
        peak=gen_defaults["peak"],
        speed=args.speed,
    )


def _generator(args: argparse.Namespace, gen_defaults: dict):
    from isdrama.inference.generator import DramaGenerator

    return DramaGenerator.from_checkpoint(
        args.checkpoint, codec=args.codec, device=args.device, settings=_settings(args, gen_defaults)
    )


def script_main(argv: Sequence[str], cfg: dict) -> int:
    from dataclasses import asdict

    from isdrama.inference.run import describe_script
    from isdrama.inference.script import ScriptError, load_script

    p = argparse.ArgumentParser(
        prog="isdrama-infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("script", type=Path, help="drama script (YAML or JSON; docs/drama-script.md)")
    p.add_argument("--out", type=Path, default=Path("outputs/drama"), help="output folder (default outputs/drama)")
    p.add_argument("--dry-run", action="store_true", help="validate the script only (no model)")
    p.add_argument(
        "--mux-video", type=Path, default=None, help="also write drama.mp4: this video with the drama's audio"
    )
    _model_args(p, cfg)
    _generation_args(p, cfg["generation"])
    args = p.parse_args(argv)
    try:
        script = load_script(args.script)
    except ScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_script(script))
        return 0
    try:
        gen = _generator(args, cfg["generation"])
        drama = gen.generate(script, progress=not args.quiet)
        paths = drama.save(args.out, video=args.mux_video)
    except (FileNotFoundError, ValueError, RuntimeError, NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"drama: {paths['drama']} ({drama.seconds:.1f} s, {len(script.lines)} lines, {drama.sample_rate} Hz binaural)"
    )
    print(f"manifest: {paths['manifest']}; settings: {asdict(gen.settings)}")
    return 0


def batch_main(argv: Sequence[str], cfg: dict) -> int:
    from isdrama.inference.batch import MODES, generate_split

    p = argparse.ArgumentParser(prog="isdrama-infer batch", description="a dataset split -> isdrama-eval folders")
    p.add_argument("root", type=Path, help="dataset root (its splits.json chooses the lines)")
    p.add_argument("out", type=Path, help="output folder: gt/ infer/ prompt/ texts.json")
    p.add_argument("--mode", required=True, choices=MODES, help="pose mode of the drama model, or the cascade baseline")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None, help="at most this many lines")
    p.add_argument("--splits", type=Path, default=None, help="split file (default ROOT/splits.json)")
    _model_args(p, cfg)
    _generation_args(p, cfg["generation"])
    args = p.parse_args(argv)
    try:
        gen = None if args.mode == "cascade" else _generator(args, cfg["generation"])
        n = generate_split(args.root, args.out, args.mode, gen, args.split, args.limit, args.splits, not args.quiet)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    o = args.out
    print(
        f"[batch {args.mode}] {n} line(s) -> {o} (evaluate with: isdrama-eval {o}/gt {o}/infer --prompt-dir "
        f"{o}/prompt --texts {o}/texts.json --splits {args.splits or args.root} --split {args.split})"
    )
    return 0


def table_main(argv: Sequence[str], cfg: dict) -> int:
    from isdrama.inference.table import results_table

    p = argparse.ArgumentParser(
        prog="isdrama-infer table", description="score the drama model per pose mode and the cascade (paper Table 3)"
    )
    p.add_argument("root", type=Path, help="dataset root")
    p.add_argument("out", type=Path, help="output folder (one batch folder + eval report per system, table.md)")
    p.add_argument("--modes", nargs="+", default=["geo", "video", "text", "cascade"], help="systems to score")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--splits", type=Path, default=None)
    p.add_argument("--spatial-ast-checkpoint", default=None, help="BAT SpatialAST checkpoint (ANG, DIS)")
    p.add_argument("--metrics", nargs="+", default=None, help="metrics to score (isdrama-eval --metrics; default all)")
    _model_args(p, cfg)
    _generation_args(p, cfg["generation"])
    args = p.parse_args(argv)
    try:
        needs_model = any(m != "cascade" for m in args.modes)
        gen = _generator(args, cfg["generation"]) if needs_model else None
        path = results_table(
            args.root,
            args.out,
            args.modes,
            gen,
            split=args.split,
            limit=args.limit,
            splits_file=args.splits,
            spatial_ast_checkpoint=args.spatial_ast_checkpoint,
            metrics=args.metrics,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path.read_text())
    print(f"table: {path}")
    return 0


def pack_main(argv: Sequence[str], cfg: dict) -> int:
    from isdrama.inference.checkpoints import pack_inference_checkpoints

    p = argparse.ArgumentParser(prog="isdrama-infer pack", description="half-precision inference checkpoints")
    p.add_argument("--drama", type=Path, required=True, help="drama export or drama-stage checkpoint")
    p.add_argument("--codec", type=Path, required=True, help="the codec checkpoint the model was trained with")
    p.add_argument("--out", type=Path, required=True, help="folder for drama.pt + codec.pt")
    p.add_argument("--full-precision", action="store_true", help="keep float32")
    args = p.parse_args(argv)
    try:
        paths = pack_inference_checkpoints(args.drama, args.codec, args.out, half=not args.full_precision)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from isdrama.utils.config import project_config

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = project_config("infer")
    if argv and argv[0] in SUBCOMMANDS:
        return {"batch": batch_main, "table": table_main, "pack": pack_main}[argv[0]](argv[1:], cfg)
    return script_main(argv, cfg)


if __name__ == "__main__":
    sys.exit(main())
