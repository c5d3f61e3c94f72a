"""Selective-scan backends on this machine: forward + backward time of one Mamba layer's scan,
or with ``--inference`` the forward alone without autograd (sampling).

    .venv/bin/python bench/bench_scan.py [--lengths 375 1500 6000] [--batch 1] [--inner 256] [--state 8]
    .venv/bin/python bench/bench_scan.py --inference --batch 3 --lengths 375 600 975

``--inference`` compares the fused C kernel (what sampling runs on CPU,
isdrama/models/blocks/cpu_kernels.py), the chunked scan's in-place form (its fallback where the
kernel cannot be built), the differentiable form run under ``torch.no_grad`` and mambapy;
minimum of --repeats.

For each sequence length: the fused C kernel pair (what ``backend: chunked`` runs on CPU where it
builds), the pure-PyTorch chunked scan (its fallback; chunk = ceil(sqrt(L)) and fixed chunks),
mambapy's parallel scan and the plain loop (skipped above --loop-max). The
median of --repeats runs after one warm-up. Numbers go into docs/benchmarks.md ("Scan backends").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def header(args, columns: str) -> None:
    """Thread count, shapes and the table header."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch} E={args.inner} N={args.state}")
    print(columns)
    print("|---" * columns.count("|", 1) + "|")


def scan_inputs(args, L: int, requires_grad: bool):
    """x, delta (B, L, E), A (E, N), Bm, Cm (B, L, N), D (E,) of seed 0."""
    import torch

    g = torch.Generator().manual_seed(0)
    shape = (args.batch, L, args.inner)
    tensors = (
        torch.randn(shape, generator=g),
        torch.nn.functional.softplus(torch.randn(shape, generator=g)),
        -torch.exp(torch.randn(args.inner, args.state, generator=g)),
        torch.randn(args.batch, L, args.state, generator=g),
        torch.randn(args.batch, L, args.state, generator=g),
        torch.randn(args.inner, generator=g),
    )
    return tuple(t.requires_grad_() for t in tensors) if requires_grad else tensors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[375, 1500, 6000])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--inner", type=int, default=256, help="d_inner (expand x d_model)")
    p.add_argument("--state", type=int, default=8, help="d_state")
    p.add_argument("--chunks", type=int, nargs="*", default=[0, 16, 64], help="chunk lengths (0 = sqrt(L))")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loop-max", type=int, default=1500)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--inference", action="store_true", help="no-grad forward only (sampling)")
    args = p.parse_args(argv)

    from isdrama.models.blocks import cpu_kernels
    from isdrama.models.blocks.scan import scan_chunked_differentiable, selective_scan

    if args.inference:
        return inference(args)

    header(args, "| L | backend | fwd+bwd s | ms / frame |")
    for L in args.lengths:
        x, delta, A, Bm, Cm, D = scan_inputs(args, L, requires_grad=True)
        runs = []
        if cpu_kernels.fused_kernels_available():  # what backend=chunked runs on CPU
            runs.append(("fused C kernels", lambda *a, chunk: cpu_kernels.scan_fused_train(*a), 0))
        runs += [
            (f"chunked PyTorch c={c or 'sqrt'}", lambda *a, chunk: scan_chunked_differentiable(*a, chunk=chunk), c)
            for c in args.chunks
        ]
        runs.append(("mambapy", lambda *a, chunk: selective_scan(*a, backend="mambapy"), 0))
        if L <= args.loop_max:
            runs.append(("loop", lambda *a, chunk: selective_scan(*a, backend="loop"), 0))
        for name, fn, chunk in runs:
            times = []
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                fn(x, delta, A, Bm, Cm, D, chunk=chunk).square().sum().backward()
                if i:
                    times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            print(f"| {L} | {name} | {t:.3f} | {1000 * t / (L * args.batch):.3f} |", flush=True)
    return 0


def inference(args) -> int:
    """No-grad forward: the fused C kernel (what sampling runs on CPU) vs the in-place chunked
    form (its fallback) vs the differentiable form's arithmetic vs mambapy."""
    import torch

    from isdrama.models.blocks import cpu_kernels, scan

    header(args, "| L | scan (no grad) | ms (min) | ms / frame |")
    if not cpu_kernels.fused_kernels_available():
        print("(the fused kernel is unavailable here: see the warning above)")
    for L in args.lengths:
        inputs = scan_inputs(args, L, requires_grad=False)
        runs = []
        if cpu_kernels.fused_kernels_available():
            runs.append(("fused C kernel", lambda *a, chunk: cpu_kernels.scan_fused_cpu(*a), 0))
        for c in args.chunks:
            runs.append((f"in place c={c or 'sqrt'}", scan.scan_chunked_inplace, c))
            runs.append((f"differentiable form c={c or 'sqrt'}", scan.scan_chunked_differentiable, c))
        runs.append(("mambapy", lambda *a, chunk: scan.scan_mambapy(*a), 0))
        for name, fn, chunk in runs:
            times = []
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                with torch.no_grad():
                    fn(*inputs, chunk=chunk)
                if i:
                    times.append(time.perf_counter() - t0)
            t = min(times)
            print(f"| {L} | {name} | {1000 * t:.1f} | {1000 * t / (L * args.batch):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
