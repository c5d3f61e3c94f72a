"""`isdrama-data tokenize ROOT`: encode every line of a dataset once to cached codec tokens.

    isdrama-data tokenize ROOT [--bandwidth 6] [--model encodec_24khz] [--pretrained auto|true|false]
                               [--codec-checkpoint PATH] [--kmeans-init N_SECONDS] [--batch-size B]
                               [--device cpu] [--cache-dir DIR] [--quiet]

Tokens go to ROOT/.isdrama_cache/tokens/<codec_key>/ (see isdrama.data.cache). Re-running skips
what is cached, so a killed run resumes. When the codec has random weights (no pretrained
EnCodec available), its codebooks are first k-means initialised on the dataset's own audio and
that codec is saved under ROOT/.isdrama_cache/codec/, so later runs reuse it and keep the key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `isdrama-data tokenize` (defaults None = CodecConfig's defaults)."""
    parser.add_argument("root", type=Path, help="dataset root (MRSDrama layout)")
    parser.add_argument("--model", default=None, help="encodec_24khz (default, per ear) or encodec_48khz (stereo)")
    parser.add_argument("--bandwidth", type=float, default=None, help="kbps (sets n_q); default 6")
    parser.add_argument(
        "--pretrained",
        default=None,
        choices=["auto", "true", "false"],
        help="EnCodec's pretrained weights: auto (default; random with a warning when "
        "unavailable), true (fail without them), false (random)",
    )
    parser.add_argument(
        "--codec-checkpoint",
        type=Path,
        default=None,
        help="local codec weights (EnCodec's .th, a state dict, or a saved isdrama codec)",
    )
    parser.add_argument(
        "--kmeans-init",
        type=float,
        default=None,
        metavar="N_SECONDS",
        help="k-means the codebooks on N seconds of the dataset's audio. Default: only "
        "when codebooks are uninitialised (random weights), on codec.kmeans.seconds "
        "(600 s); a value forces it also on pretrained weights; 0 forbids it",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="lines per encoder call (default 1 on cpu, 8 on an accelerator)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="token cache folder (default ROOT/.isdrama_cache/tokens)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Tokenize the dataset; 0 on success, 1 on a data or codec error, 2 on bad arguments."""
    from isdrama.codec import CodecConfig, PretrainedUnavailableError
    from isdrama.data.cache import TokenCache
    from isdrama.data.mrsdrama import load_dataset
    from isdrama.data.schema import DataError
    from isdrama.data.tokenization import DEFAULT_BATCH_SIZE, open_dataset_codec

    root = Path(args.root)
    overrides = {
        k: v
        for k, v in {"model": args.model, "bandwidth": args.bandwidth, "pretrained": args.pretrained}.items()
        if v is not None
    }
    if args.codec_checkpoint is not None:
        overrides["checkpoint"] = str(args.codec_checkpoint)
    try:
        config = CodecConfig(**overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.kmeans_init is not None and args.kmeans_init < 0:
        print("error: --kmeans-init must be >= 0 seconds", file=sys.stderr)
        return 2
    try:
        index = load_dataset(root)
        lines = index.lines
        if not lines:
            raise DataError(root, "no lines found (is this an MRSDrama-layout root?)")
        print(f"[tokenize] {len(lines)} line(s) under {root}")

        codec = open_dataset_codec(
            root,
            config,
            lines,
            device=args.device,
            kmeans_seconds=args.kmeans_init,
            progress=not args.quiet,
            log=lambda msg: print(msg.replace("[codec]", "[tokenize]")),
        )
        cache = TokenCache(root, codec, cache_dir=args.cache_dir)
        print(f"[tokenize] codec key {cache.codec_key}; tokens in {cache.directory}")
        batch_size = args.batch_size or DEFAULT_BATCH_SIZE["cpu" if codec.device.type == "cpu" else "accelerator"]
        stats = cache.tokenize(lines, batch_size=batch_size, progress=not args.quiet)
    except (DataError, FileNotFoundError, ValueError, PretrainedUnavailableError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"[tokenize] {stats.format()}")
    return 0
