"""Training-step time and peak memory per frame of the Immersive Drama Transformer vs line length.

    .venv/bin/python bench/bench_drama_step.py [--preset tiny|base] [--seconds 5 10 20 40 80] \
        [--ablation none|no_mamba|no_attention] [--window preset|full|FRAMES] \
        [--device cpu|cuda] [--precision fp32|bf16]

One line of S seconds (75 frames/s) plus a 3 s prompt, forward + backward of the transformer
(the flow loss on random latents; conditioning tensors random), each length in a fresh process
so the peak memory is that step's: CUDA's max_memory_allocated, or on CPU the growth of the
process's peak RSS over the model alone. The Mamba path's goal: time and memory per frame at
the longest line within 1.5x of the shortest (full attention grows with L; the tiny preset's
self-attention is local beyond a 1200-frame window, ``--window full`` measures it without).
Numbers go into docs/benchmarks.md ("Drama transformer step"). Table columns: preset, ablation,
window, seconds, frames, step s, ms per frame, peak MB, kB per frame.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FRAME_RATE = 75


def model_values(preset: str, ablation: str, window: str) -> dict:
    """``cfg.model`` of the drama stage with the transformer preset (and ablation, and self-attention
    window: ``preset``, ``full`` or a number of frames), resolved."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = [f"model/transformer={preset}"]
    if window != "preset":
        overrides.append(f"model.transformer.attention.window={'null' if window == 'full' else int(window)}")
    if ablation == "no_mamba":
        overrides.append("model.transformer.mamba_enabled=false")
    elif ablation == "no_attention":
        # the Mamba path alone: no self-attention (the scene cross-attention, linear in L, stays)
        overrides.append("model.transformer.attention.enabled=false")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["model=drama", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)


def one(
    preset: str,
    ablation: str,
    window: str,
    seconds: float,
    device: str,
    precision: str,
    repeats: int,
    checkpoint: bool,
) -> dict:
    import resource
    import time

    import torch

    from isdrama.flow import FlowConfig, RectifiedFlow
    from isdrama.models.drama_transformer import DramaTransformer, DramaTransformerConfig
    from isdrama.utils.config import build_config

    model = model_values(preset, ablation, window)
    values = model["transformer"]
    C = model["latent_dim"]
    values["mamba"]["checkpoint"] = checkpoint
    if device == "cuda":
        try:
            import mamba_ssm  # noqa: F401

            values["mamba"]["backend"] = "cuda"
        except ImportError:
            values["mamba"]["backend"] = "mambapy"
    d = values["d_model"]
    cfg = build_config(
        DramaTransformerConfig, values, "model.transformer", latent_dim=C, content_dim=d, pose_dim=d, scene_dim=d
    )
    flow_cfg = build_config(FlowConfig, model["flow"], "model.flow")
    flow = RectifiedFlow(DramaTransformer(cfg), C, flow_cfg).to(device)
    T, P = int(seconds * FRAME_RATE), 3 * FRAME_RATE
    g = torch.Generator(device=device).manual_seed(0)
    x1 = torch.randn(1, T, C, device=device, generator=g)
    mask = torch.ones(1, T, dtype=torch.bool, device=device)
    cond = {
        "z_c": torch.randn(1, T, d, device=device, generator=g),
        "z_p": torch.randn(1, T, d, device=device, generator=g),
        "prompt": torch.randn(1, P, C, device=device, generator=g),
        "prompt_mask": torch.ones(1, P, dtype=torch.bool, device=device),
    }
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = flow.loss(x1, mask, cond, generator=g)["loss"]
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    frames = T + P
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    step = sorted(times)[len(times) // 2]
    return {
        "preset": preset,
        "ablation": ablation,
        "window": values["attention"]["window"],
        "seconds": seconds,
        "frames": frames,
        "step_s": step,
        "ms_per_frame": 1000 * step / frames,
        "peak_mb": peak / 2**20,
        "kb_per_frame": peak / 1024 / frames,
        "params_m": sum(p.numel() for p in flow.parameters()) / 1e6,
        "backend": values["mamba"]["backend"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    p.add_argument(
        "--ablation",
        default="none",
        choices=["none", "no_mamba", "no_attention"],
        help="no_mamba: attention-only (each Mamba layer a transformer layer); "
        "no_attention: no self-attention, the Mamba path alone",
    )
    p.add_argument(
        "--window",
        default="preset",
        help="self-attention window: preset (the preset's), full (none), or a number of frames each side",
    )
    p.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 20, 40, 80])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--checkpoint", action="store_true", help="activation checkpointing per Mamba layer")
    p.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(
            json.dumps(
                one(
                    args.preset,
                    args.ablation,
                    args.window,
                    args.one,
                    args.device,
                    args.precision,
                    args.repeats,
                    args.checkpoint,
                )
            )
        )
        return 0
    rows = []
    for s in args.seconds:
        cmd = [
            sys.executable,
            __file__,
            "--preset",
            args.preset,
            "--ablation",
            args.ablation,
            "--window",
            args.window,
            "--device",
            args.device,
            "--precision",
            args.precision,
            "--repeats",
            str(args.repeats),
            "--one",
            str(s),
        ]
        if args.checkpoint:
            cmd.append("--checkpoint")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"{s:g} s: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        window = "full" if r["window"] is None else r["window"]
        cells = [args.preset, args.ablation, window, f"{s:g}", r["frames"], f"{r['step_s']:.3f}"]
        cells += [f"{r['ms_per_frame']:.3f}", f"{r['peak_mb']:.0f}", f"{r['kb_per_frame']:.1f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    if len(rows) > 1:
        print(
            f"longest / shortest per frame: time {rows[-1]['ms_per_frame'] / rows[0]['ms_per_frame']:.2f}, "
            f"memory {rows[-1]['kb_per_frame'] / max(rows[0]['kb_per_frame'], 1e-9):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
