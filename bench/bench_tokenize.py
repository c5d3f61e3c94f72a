"""Tokenisation speed: seconds of binaural 48 kHz audio tokenised per wall-clock second.

Usage:
    .venv/bin/python bench/bench_tokenize.py                       # defaults below, CPU, 1 thread
    .venv/bin/python bench/bench_tokenize.py --lines 16 --seconds 8 --batch-size 8 --threads 2
    .venv/bin/python bench/bench_tokenize.py --root data/synth     # a real dataset's first --lines lines
    .venv/bin/python bench/bench_tokenize.py --device cuda --model encodec_48khz

What is timed: ``TokenCache.tokenize`` end to end (hashing, reading, 48 -> 24 kHz resampling,
encoding, atomic writes) on a fresh cache folder, and separately ``codec.encode`` alone on the
same audio already in memory. The codec has random weights with k-means-initialised codebooks
(a few iterations on one line): the encoder does exactly the work it does with pretrained
weights. Prints one JSON line (speed = audio seconds per wall second; > 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from isdrama.codec import BinauralCodec, CodecConfig, KMeansConfig, init_codebooks_kmeans
from isdrama.data.audio import read_audio, write_audio
from isdrama.data.cache import TokenCache
from isdrama.data.schema import DATA_SAMPLE_RATE, DramaLine


def synthetic_lines(folder: Path, n: int, seconds: float, seed: int) -> list[DramaLine]:
    """``n`` binaural 48 kHz wavs of ``seconds`` each: harmonic voice + noise, panned."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        t = np.arange(int(seconds * DATA_SAMPLE_RATE)) / DATA_SAMPLE_RATE
        phase = 2 * np.pi * np.cumsum(rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / DATA_SAMPLE_RATE
        mono = sum(0.1 / k * np.sin(k * phase) for k in range(1, 10)) + 0.01 * rng.standard_normal(t.size)
        pan = rng.uniform(0.2, 0.8)
        path = folder / "bench" / "drama" / "wav" / f"line{i:04d}.wav"
        write_audio(path, np.stack([mono * pan, mono * (1 - pan)]), DATA_SAMPLE_RATE)
        lines.append(DramaLine("drama", f"line{i:04d}", "spk", "", (), (), 0.0, seconds, path, set_name="bench"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=8, help="lines to tokenise")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per synthetic line")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", default="encodec_24khz")
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", type=Path, default=None, help="use this dataset's lines instead of synthetic ones")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.root is not None:
            from isdrama.data.mrsdrama import load_dataset

            lines = load_dataset(args.root).lines[: args.lines]
        else:
            lines = synthetic_lines(tmp, args.lines, args.seconds, args.seed)
        codec = BinauralCodec(CodecConfig(model=args.model, bandwidth=args.bandwidth, pretrained=False)).to(args.device)
        first, _ = read_audio(lines[0].wav_path, expect_sr=DATA_SAMPLE_RATE, expect_channels=2)
        init_codebooks_kmeans(codec, codec.prepare_audio(first, DATA_SAMPLE_RATE), KMeansConfig(n_iters=2))

        codec.encode(codec.prepare_audio(first[:, :DATA_SAMPLE_RATE], DATA_SAMPLE_RATE))  # warm-up
        cache = TokenCache(tmp, codec, cache_dir=tmp / "cache")
        stats = cache.tokenize(lines, batch_size=args.batch_size, progress=False)

        wavs = [codec.prepare_audio(read_audio(line.wav_path)[0], DATA_SAMPLE_RATE) for line in lines]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(wavs), args.batch_size):
            group = wavs[i : i + args.batch_size]
            longest = max(w.shape[-1] for w in group)
            codec.encode(torch.cat([torch.nn.functional.pad(w, (0, longest - w.shape[-1])) for w in group]))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        encode_s = time.perf_counter() - t0

    result = {
        "bench": "tokenize",
        "model": args.model,
        "bandwidth": args.bandwidth,
        "n_q": codec.n_q,
        "device": args.device,
        "threads": args.threads,
        "lines": len(lines),
        "batch_size": args.batch_size,
        "audio_seconds": round(stats.audio_seconds, 2),
        "tokenize_wall_s": round(stats.wall_seconds, 3),
        "tokenize_speed_audio_s_per_s": round(stats.speed, 3),
        "encode_only_speed_audio_s_per_s": round(stats.audio_seconds / encode_s, 3),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
