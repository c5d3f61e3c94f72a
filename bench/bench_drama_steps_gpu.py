"""The paper configuration (177 M) for N bf16 training steps of a 12 k-frame batch on a GPU.

    .venv/bin/python bench/bench_drama_steps_gpu.py [--steps 300] [--frames 12000] [--line-seconds 10]

Random latents and conditioning (the transformer's cost does not depend on their values), Adam,
bf16 autocast, activation checkpointing per Mamba layer; for each scan backend that runs here
(``cuda`` with mamba-ssm, ``mambapy``): median step time after 10 warm-up steps, peak memory,
frames per second. ``--device cpu --preset tiny`` runs the same loop on the CPU (the mambapy
backend, peak memory not measured): the test suite's check that this script works.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--frames", type=int, default=12000)
    p.add_argument("--line-seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--preset", default="base", choices=["base", "tiny"], help="model/transformer preset")
    args = p.parse_args(argv)

    import torch
    from bench_drama_step import model_values

    from isdrama.flow import FlowConfig, RectifiedFlow
    from isdrama.models.drama_transformer import DramaTransformer, DramaTransformerConfig
    from isdrama.utils.config import build_config
    from isdrama.utils.io import atomic_write_json

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_drama_steps_gpu.py needs a CUDA device (--device cpu: the CPU check)")
    backends = ["mambapy"]
    try:
        import mamba_ssm  # noqa: F401

        if device == "cuda":
            backends.insert(0, "cuda")
    except ImportError:
        print("mamba-ssm not installed: the cuda backend is not measured")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    warmup = min(10, args.steps // 2)
    T = int(args.line_seconds * 75)
    B = max(1, args.frames // T)
    results = []
    for backend in backends:
        model = model_values(args.preset, "none", "preset")
        values = model["transformer"]
        C = model["latent_dim"]
        values["mamba"].update(backend=backend, checkpoint=True)
        d = values["d_model"]
        cfg = build_config(DramaTransformerConfig, values, "t", latent_dim=C, content_dim=d, pose_dim=d, scene_dim=d)
        flow_cfg = build_config(FlowConfig, model["flow"], "model.flow")
        flow = RectifiedFlow(DramaTransformer(cfg), C, flow_cfg).to(device)
        opt = torch.optim.Adam(flow.parameters(), lr=5e-5)
        x1 = torch.randn(B, T, C, device=device)
        mask = torch.ones(B, T, dtype=torch.bool, device=device)
        cond = {
            "z_c": torch.randn(B, T, d, device=device),
            "z_p": torch.randn(B, T, d, device=device),
            "prompt": torch.randn(B, 225, C, device=device),
            "prompt_mask": torch.ones(B, 225, dtype=torch.bool, device=device),
        }
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.steps):
            sync()
            t0 = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = flow.loss(x1, mask, cond)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
            opt.step()
            sync()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        row = {
            "backend": backend,
            "batch": [B, T],
            "frames": B * T,
            "step_s": step_s,
            "frames_per_s": B * T / step_s,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
            "final_loss": float(loss.detach()),
            "params_m": sum(p.numel() for p in flow.parameters()) / 1e6,
        }
        print(json.dumps(row), flush=True)
        results.append(row)
        del flow, opt
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        atomic_write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
