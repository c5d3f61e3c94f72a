"""`isdrama-data`: dataset tools.

    isdrama-data synth OUT --dramas N --seed S     write a synthetic MRSDrama-layout dataset
    isdrama-data check ROOT                        summary + every problem; exit 1 on problems
    isdrama-data split ROOT [--val V --test T]     write ROOT/splits.json, the drama split every tool reads
    isdrama-data tokenize ROOT                     cache EnCodec tokens for every line (resumable)
    isdrama-data resynth ROOT OUT [--split test]   codec round trip of a split, ready for isdrama-eval

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports happen only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Optional, Sequence

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "synth": ("isdrama.data.synth.cli", "generate a synthetic MRSDrama-layout dataset"),
    "check": ("isdrama.data.cli", "summarise a dataset root and list every problem"),
    "split": ("isdrama.data.split_cli", "write ROOT/splits.json: the train/val/test drama split every tool reads"),
    "tokenize": ("isdrama.data.tokenize_cli", "encode every line to cached EnCodec tokens"),
    "resynth": ("isdrama.inference.resynth", "decode cached tokens of a split to wavs (gt/ + infer/ for evaluation)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `isdrama-data check`."""
    parser.add_argument("root", type=Path, help="dataset root (MRSDrama layout)")
    parser.add_argument("--no-pose", action="store_true", help="skip reading pose arrays (faster)")
    parser.add_argument("--max-problems", type=int, default=50, help="problems to print (all are counted)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """`isdrama-data check`: print the report; 0 when clean, 1 when problems were found."""
    from tqdm import tqdm

    from isdrama.data.check import check_dataset
    from isdrama.data.schema import DataError

    try:
        report = check_dataset(
            args.root,
            check_pose=not args.no_pose,
            progress=None if args.quiet else (lambda xs: tqdm(xs, desc="checking", unit="line")),
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format(max_problems=args.max_problems))
    return 0 if report.ok else 1


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` set, just that subcommand's module is imported (fast start)."""
    parser = argparse.ArgumentParser(
        prog="isdrama-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            mod = sys.modules[__name__] if module == __name__ else importlib.import_module(module)
            mod.add_arguments(sp)
            sp.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in SUBCOMMANDS else None).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
