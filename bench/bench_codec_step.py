"""Codec-stage training step time per architecture preset (what a CPU or GPU budget buys).

Usage:
    .venv/bin/python bench/bench_codec_step.py                          # tiny preset, CPU, 2 threads
    .venv/bin/python bench/bench_codec_step.py --preset encodec --batch-size 8 --segment 1.0
    .venv/bin/python bench/bench_codec_step.py --device cuda --preset encodec --batch-size 32
    .venv/bin/python bench/bench_codec_step.py --adversarial             # + Vocos' discriminators
    .venv/bin/python bench/bench_codec_step.py --set model.architecture.encoder_kind=seanet

Builds the codec stage's LightningModule from the real configs (experiment=codec_demo, the chosen
model/codec_architecture preset), turns the quantiser on (k-means on one batch) and times full
generator steps (encoder, RVQ at the largest training bandwidth, decoder, every loss, backward,
AdamW) on random binaural clips; prints one JSON line with seconds per step and seconds of binaural
audio trained per wall second, and the peak memory (CUDA only).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="configs/model/codec_architecture/<preset>.yaml")
    parser.add_argument("--batch-size", type=int, default=8, help="binaural clips per step")
    parser.add_argument("--segment", type=float, default=1.0, help="seconds per clip")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--adversarial", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from einops import rearrange
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from isdrama.codec.kmeans_init import kmeans_init_layers

    overrides = ["experiment=codec_demo", f"model/codec_architecture@model.architecture={args.preset}"]
    if args.adversarial:
        overrides.append("model.losses.adversarial.enabled=true")
    overrides += args.set
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(config_name="train", overrides=overrides)
    module = instantiate(cfg.model, _recursive_=False).to(args.device).train()
    sr = module.spec.sample_rate
    gen = torch.Generator().manual_seed(0)
    wav = (0.03 * torch.randn(args.batch_size, 2, int(args.segment * sr), generator=gen)).to(args.device)
    with torch.no_grad():
        frames = rearrange(module.encode(wav), "n d t -> (n t) d").cpu()
    kmeans_init_layers(module.model.quantizer.vq.layers[: module.arch.n_q], frames, 2, 4096, gen, False)
    module.quantizer_on.fill_(True)
    params = [p for n, p in module.named_parameters() if not n.startswith("adversarial.")]
    opt = torch.optim.AdamW(params, lr=1e-4)
    opt_d = torch.optim.AdamW(module.adversarial.parameters(), lr=1e-4) if module.adversarial is not None else None
    bandwidth = max(module.q_bandwidths)

    def step() -> None:
        total, _, recon = module.reconstruction_losses(wav, bandwidth, train=True)
        if opt_d is not None:
            d_loss = module.adversarial.discriminator(recon, wav)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            adv, fm = module.adversarial.generator(recon, wav)
            total = total + adv + fm
        opt.zero_grad()
        total.backward()
        opt.step()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    sync()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    n_params = sum(p.numel() for p in params) / 1e6
    print(
        json.dumps(
            {
                "preset": args.preset,
                "overrides": args.set,
                "adversarial": args.adversarial,
                "params_M": round(n_params, 2),
                "batch_size": args.batch_size,
                "segment_s": args.segment,
                "device": args.device,
                "threads": args.threads,
                "cpu": platform.processor() or platform.machine(),
                "step_s_median": round(median, 3),
                "step_s_min": round(min(times), 3),
                "audio_s_per_s": round(args.batch_size * args.segment / median, 2),
                "peak_mem_GB": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if args.device.startswith("cuda")
                else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
