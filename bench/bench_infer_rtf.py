"""Real-time factor of line generation (inference, guidance on) for the demo model and the paper
transformer.

    .venv/bin/python bench/bench_infer_rtf.py --checkpoint checkpoints/demo/drama.pt [--seconds 2 5 10]
    .venv/bin/python bench/bench_infer_rtf.py --preset base --codec checkpoints/demo/codec.pt

RTF = wall seconds to generate a line / seconds of audio it lasts, for the whole
``DramaGenerator.generate_line`` (front end, 25 Euler steps of the batched guidance: 3 branches
with the previous line as the context prompt, codec decoding), a 3 s speaker prompt, a static
geometric pose, after one warm-up line; median of ``--repeats``. ``--preset base`` builds the
paper-size transformer (random weights, the tiny front end: the transformer dominates the cost)
from the composed configs. Numbers go into docs/benchmarks.md ("Inference").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def preset_generator(preset: str, codec_path: Path, settings):
    """A DramaGenerator around a fresh (random) drama module of ``model/transformer=preset``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from isdrama.codec import BinauralCodec
    from isdrama.inference.generator import DramaGenerator
    from isdrama.lit.drama import DramaModule

    overrides = ["experiment=drama_demo", f"model/transformer={preset}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    values = OmegaConf.to_container(cfg.model, resolve=True)
    values.pop("_target_")
    module = DramaModule(**values)
    return DramaGenerator(module.eval(), BinauralCodec.load(codec_path), settings)


def main() -> None:
    import numpy as np
    import torch

    from isdrama.inference.generator import DramaGenerator, default_settings
    from isdrama.inference.poses import PoseInput

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None, help="drama model (export or checkpoint)")
    p.add_argument("--preset", default=None, help="instead: a fresh model of model/transformer=PRESET")
    p.add_argument("--codec", type=Path, default=None, help="codec checkpoint (default beside the model)")
    p.add_argument("--seconds", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default configs/infer.yaml)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = default_settings(**({"steps": args.steps} if args.steps else {}))
    if args.preset:
        if args.codec is None:
            p.error("--preset needs --codec")
        gen, name = preset_generator(args.preset, args.codec, settings), f"preset {args.preset}"
    else:
        if args.checkpoint is None:
            p.error("give --checkpoint or --preset")
        gen, name = (
            DramaGenerator.from_checkpoint(args.checkpoint, codec=args.codec, settings=settings),
            str(args.checkpoint),
        )
    n_params = sum(t.numel() for t in gen.net.flow.estimator.parameters())
    sr = 16000
    prompt = gen.encode_prompt(0.1 * np.sin(2 * np.pi * 180 * np.arange(3 * sr) / sr), sr)
    text = "the quick brown fox jumps over the lazy dog " * 4
    fr = gen.frame_rate

    def line(seconds: float, seed: int) -> float:
        frames = int(round(seconds * fr))
        pose = PoseInput("geo", pose=torch.tensor([[-2.0, 1.0, 0.0, 1, 0, 0, 0, 0, 0]]).repeat(frames, 1))
        t0 = time.perf_counter()
        gen.generate_line(text, pose, prompt, frames=frames, previous=prompt, seed=seed)
        return time.perf_counter() - t0

    line(args.seconds[0], 0)  # warm-up, not reported
    rows = []
    for seconds in args.seconds:
        wall = statistics.median(line(seconds, r) for r in range(args.repeats))
        rows.append({"seconds": seconds, "wall_s": round(wall, 3), "rtf": round(wall / seconds, 3)})
    out = {
        "model": name,
        "transformer_parameters": n_params,
        "steps": settings.steps,
        "guidance_branches": 3,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    print(
        f"{name}: {n_params / 1e6:.1f} M transformer parameters, {settings.steps} steps, 3 guidance branches, "
        f"{torch.get_num_threads()} threads"
    )
    print("| line (s) | wall (s) | RTF |\n|---|---|---|")
    for r in rows:
        print(f"| {r['seconds']:g} | {r['wall_s']:.2f} | {r['rtf']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
