"""Open the codec a dataset's tokens are made with, and its token cache.

When the codec has random weights (no pretrained EnCodec available), its codebooks are k-means
initialised on the dataset's own audio once and the result is saved under
ROOT/.isdrama_cache/codec/, so later runs (tokenize, training, inference) reuse it and the cache
key stays the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

#: Lines per encoder call by device kind: on CPU padding costs more than batching saves
#: (bench/bench_tokenize.py: 4.2 s audio/s at 1 vs 3.5 at 8, one thread).
DEFAULT_BATCH_SIZE = {"cpu": 1, "accelerator": 8}


def kmeans_audio(codec, lines: Sequence, seconds: float, seed: int) -> Iterator:
    """Binaural audio at the codec rate, (2, S) per line, from a seeded shuffle of ``lines``
    until ``seconds`` are reached."""
    import numpy as np

    from isdrama.data.audio import read_audio
    from isdrama.data.schema import DATA_SAMPLE_RATE

    order = np.random.default_rng(seed).permutation(len(lines))
    total = 0.0
    for i in order:
        if total >= seconds:
            return
        wav, _ = read_audio(lines[i].wav_path, expect_sr=DATA_SAMPLE_RATE, expect_channels=2)
        total += wav.shape[1] / DATA_SAMPLE_RATE
        yield codec.prepare_audio(wav, DATA_SAMPLE_RATE)


def kmeans_checkpoint_path(cache_root: Path, codec, seconds: float) -> Path:
    """Where the k-means-initialised codec for ``codec`` (before init) and these settings lives:
    ``codec/<model>-<key of the codec before init>-kmeans-<digest of the k-means settings>.pt``."""
    settings = {k: v for k, v in asdict(codec.config.kmeans).items() if k != "seconds"}
    ident = json.dumps({"kmeans": settings, "seconds": float(seconds)}, sort_keys=True, default=str)
    digest = hashlib.sha1(ident.encode()).hexdigest()[:12]
    return cache_root / "codec" / f"{codec.config.model}-{codec.config_key()}-kmeans-{digest}.pt"


def existing_kmeans_checkpoints(cache_root: Path, codec) -> list[Path]:
    """k-means-initialised codecs made earlier from this same codec (any settings), newest first."""
    found = (cache_root / "codec").glob(f"{codec.config.model}-{codec.config_key()}-kmeans-*.pt")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def open_dataset_codec(
    root: Path,
    config,
    lines: Sequence,
    device: str = "cpu",
    kmeans_seconds: Optional[float] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
):
    """The BinauralCodec for ``config``, k-means-initialised on ``lines`` when its codebooks are empty.

    ``kmeans_seconds``: None = only when uninitialised, on ``config.kmeans.seconds`` (reusing any
    codec an earlier run initialised from the same weights); > 0 forces k-means on that many
    seconds even for pretrained weights (reused when those settings were run before); 0 forbids it.
    """
    import torch

    from isdrama.codec import BinauralCodec, init_codebooks_kmeans
    from isdrama.data.cache import CACHE_DIRNAME

    codec = BinauralCodec(config).to(torch.device(device))
    log(
        f"[codec] {config.model} at {config.bandwidth:g} kbps: n_q={codec.n_q}, "
        f"{codec.frame_rate:g} frames/s, weights: {codec.weights_source}"
    )
    uninit = codec.uninitialised_layers
    forced = kmeans_seconds is not None and kmeans_seconds > 0
    if uninit and kmeans_seconds == 0:
        raise RuntimeError(
            f"codebooks {uninit} are uninitialised (every token would be 0) and "
            "--kmeans-init 0 forbids initialising them"
        )
    if not (uninit or forced):
        return codec
    seconds = float(kmeans_seconds) if forced else float(config.kmeans.seconds)
    ckpt = kmeans_checkpoint_path(Path(root) / CACHE_DIRNAME, codec, seconds)
    earlier = existing_kmeans_checkpoints(Path(root) / CACHE_DIRNAME, codec)
    if not forced and earlier and not ckpt.is_file():
        ckpt = earlier[0]  # not asked for specific settings: reuse what an earlier run made
    if ckpt.is_file():
        log(f"[codec] reusing the k-means-initialised codec {ckpt}")
        return BinauralCodec.load(ckpt).to(torch.device(device))
    why = "codebooks are uninitialised (random weights)" if uninit else "k-means requested"
    log(
        f"[codec] {why}: k-means on up to {seconds:g} s of this dataset's audio, "
        f"{config.kmeans.n_iters} iterations per RVQ layer ..."
    )
    report = init_codebooks_kmeans(
        codec, kmeans_audio(codec, lines, seconds, config.kmeans.seed), config.kmeans, progress=progress
    )
    log(f"[codec] {report.format()}")
    codec.save(
        ckpt, extra={"kmeans_seconds": seconds, "dataset_root": str(Path(root).resolve()), "n_frames": report.n_frames}
    )
    log(f"[codec] saved the initialised codec to {ckpt} (later runs reuse it)")
    return codec


def open_token_cache(
    root: Path,
    codec_config: Mapping[str, Any],
    device: str = "cpu",
    lines: Optional[Sequence] = None,
    progress: bool = True,
):
    """TokenCache of ``root`` for a codec config dict (configs/codec/*.yaml)."""
    from isdrama.codec import CodecConfig
    from isdrama.data.cache import TokenCache
    from isdrama.data.mrsdrama import load_dataset

    options = dict(codec_config)
    frame_rate = options.pop("frame_rate", None)  # a derived value kept in the yaml for interpolation
    config = CodecConfig.from_dict(options)
    if lines is None:
        lines = load_dataset(root).lines
    codec = open_dataset_codec(root, config, lines, device=device, progress=progress)
    if frame_rate is not None and abs(float(frame_rate) - codec.frame_rate) > 1e-6:
        raise ValueError(
            f"codec.frame_rate is {frame_rate} in the config but {config.model} runs at "
            f"{codec.frame_rate} frames/s; fix configs/codec/*.yaml"
        )
    return TokenCache(root, codec)
