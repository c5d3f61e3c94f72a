"""Benchmark: `isdrama-eval --metrics ipd,ild --mode reference` vs the published two-stage path.

Command (from the repository root; ~15 min on 2 CPU cores with the defaults):

    .venv/bin/python bench/bench_eval_spatial.py --pairs 100 --seconds 10 --repeats 3 \
        [--published-repo PATH/TO/ISDrama]

It writes N pairs of binaural 48 kHz wav files that look like generated speech (noise bursts with
exact digital silence between them, ~40 % of the samples; half of them band-limited to 4-8 kHz and
stored as float, so their upper bins hold nothing but rounding; each ear through its own delay
and gain), then times whole processes, alternating A B A B so both see the same machine:

- A, what users run: `isdrama-eval GT INFER --metrics ipd,ild --mode reference --out DIR`
  (imports, reading, the published computation, the JSON/CSV/Markdown/PNG report);
- B, the published code path: bench/reference_eval_script.py, i.e. the published
  gen_ipd_ild.py once per folder (torchlibrosa STFT and mel objects built for every file, one
  file at a time, a .npy per file) then evaluate.py, three processes as eval.sh runs them; with
  ``--published-repo`` the checkout's own gen_ipd_ild.extract_feature and evaluate.py run.

Before timing it checks that the numbers are identical: every per-file value of A's
results.json against B's .npy features scored by calculate_mae_time (1e-6 relative), and the
printed x100 figures. It prints the wall time of every run, the medians, the ratio B/A of each
A B pair and its median, and the machine's load average. Goal: >= 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 48000


def bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) noise bursts of 0.1-0.3 s separated by 0.05-0.25 s of exact zeros."""
    x = np.zeros(n)
    t = 0
    while t < n:
        on, off = int(rng.uniform(0.1, 0.3) * SR), int(rng.uniform(0.05, 0.25) * SR)
        x[t : t + on] = rng.standard_normal(min(on, n - t)) * 0.1
        t += on + off
    return x


def lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """Brick-wall low-pass, silent samples kept exactly silent: band-limited speech-like bursts whose
    upper bins hold nothing but rounding (as TTS or codec output resampled to 48 kHz)."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / SR) > cutoff_hz] = 0
    return np.fft.irfft(spec, len(x)) * (x != 0)


def _binaural(src: np.ndarray, delay: int, gain_db: float) -> np.ndarray:
    right = np.zeros_like(src)
    right[delay:] = src[: len(src) - delay] * 10 ** (gain_db / 20)
    return np.clip(np.stack([src, right], axis=1), -1, 1 - 2**-15)


def write_pairs(root: Path, pairs: int, seconds: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    for i in range(pairs):
        band_limited = i % 2 == 1
        cutoff = rng.uniform(4000, 8000)
        for folder in ("gt", "infer"):
            src = bursts(rng, n)
            if band_limited:
                src = lowpass(src, cutoff)
            x = _binaural(src, int(rng.integers(0, 25)), rng.uniform(-8, 8))
            (root / folder).mkdir(parents=True, exist_ok=True)
            sf.write(root / folder / f"p{i:03d}.wav", x, SR, subtype="FLOAT" if band_limited else "PCM_16")


def ours_cmd(root: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("isdrama-eval")
    return [
        str(exe),
        str(root / "gt"),
        str(root / "infer"),
        "--metrics",
        "ipd,ild",
        "--mode",
        "reference",
        "--out",
        str(out),
        "--quiet",
    ]


def published_cmd(root: Path, work: Path, repo: str | None) -> list[str]:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "reference_eval_script.py"),
        str(root / "gt"),
        str(root / "infer"),
        "--work",
        str(work),
    ]
    return cmd + (["--published-repo", repo] if repo else [])


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall, res.stdout


def check_identical(root: Path, out: Path, work: Path, printed: str) -> str:
    """A's per-file values vs B's .npy features through calculate_mae_time; B's printed figures."""
    sys.path.insert(0, str(ROOT / "bench"))
    import reference_eval_script as ref

    theirs = ref.evaluate_features(str(work / "outputs/gt/npy"), str(work / "outputs/infer/npy"))
    per_file = json.loads((out / "results.json").read_text())["per_file"]
    worst = 0.0
    for name, ipd, ild in zip(theirs["names"], theirs["ipd"], theirs["ild"]):
        mine = per_file[name]
        for key, value in (("ipd_mae", ipd), ("ild_mae", ild)):
            rel = abs(mine[key] / 100 - value) / max(abs(value), 1e-30)
            worst = max(worst, rel)
    if worst > 1e-6:
        raise SystemExit(f"numbers differ: largest per-file relative difference {worst:.2e}")
    lines = [ln for ln in printed.splitlines() if "mae(x100)" in ln]
    return (
        f"identical numbers: {len(theirs['names'])} files, largest per-file relative difference "
        f"{worst:.1e}; published printed {'; '.join(lines)}; ours IPD x100 "
        f"{theirs['ipd_mae_x100']:.6g} (published, unrounded) vs "
        f"{np.mean([per_file[n]['ipd_mae'] for n in theirs['names']]):.6g}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3, help="A B pairs of timed runs")
    ap.add_argument("--published-repo", default=None, help="a checkout of AaronZ345/ISDrama (its own code as B)")
    ap.add_argument("--data", default=None, help="reuse / keep the generated pairs in this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "pairs"
        if not (root / "infer").is_dir() or len(list((root / "infer").glob("*.wav"))) != args.pairs:
            write_pairs(root, args.pairs, args.seconds)
        out, work = Path(tmp) / "ours", Path(tmp) / "published"
        a_cmd, b_cmd = ours_cmd(root, out), published_cmd(root, work, args.published_repo)
        print("A:", " ".join(a_cmd))
        print("B:", " ".join(b_cmd))
        _, printed = timed(b_cmd)  # also the warm-up of both (file cache, numba cache)
        timed(a_cmd)
        print(check_identical(root, out, work, printed))
        a_times, b_times = [], []
        for k in range(args.repeats):
            a, _ = timed(a_cmd)
            b, _ = timed(b_cmd)
            a_times.append(a)
            b_times.append(b)
            print(
                f"run {k + 1}: isdrama-eval {a:.2f} s, published {b:.2f} s, ratio {b / a:.2f}x, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        ratios = [b / a for a, b in zip(a_times, b_times)]
        print(
            f"{args.pairs} pairs x {args.seconds:g} s: isdrama-eval median {statistics.median(a_times):.2f} s, "
            f"published median {statistics.median(b_times):.2f} s, speed-up median "
            f"{statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
