"""`isdrama-data split ROOT [--val V --test T --seed S] [--force]`: write the dataset's splits.json.

Without a split file: writes one (defaults: the values ``isdrama-data synth`` uses). With one:
adds dramas it does not list yet (each by the threshold rule, nothing else moves) and prints the
counts; asking for other fractions or another seed than the file holds is an error unless
``--force``, which re-splits from scratch and lists every drama that changed split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `isdrama-data split`."""
    from isdrama.data.splits import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SPLITS_FILE

    parser.add_argument("root", type=Path, help="dataset root (MRSDrama layout)")
    parser.add_argument(
        "--val",
        type=float,
        default=None,
        help=f"validation fraction (default: the file's, else {DEFAULT_VAL_FRACTION})",
    )
    parser.add_argument(
        "--test", type=float, default=None, help=f"test fraction (default: the file's, else {DEFAULT_TEST_FRACTION})"
    )
    parser.add_argument("--seed", type=int, default=None, help=f"split seed (default: the file's, else {DEFAULT_SEED})")
    parser.add_argument("--file", type=Path, default=None, help=f"split file (default ROOT/{SPLITS_FILE})")
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-split from scratch when the values differ from the file's (moves dramas)",
    )


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on a bad dataset, bad values or a mismatch without --force."""
    from isdrama.data.schema import DataError
    from isdrama.data.splits import (
        DEFAULT_SEED,
        DEFAULT_TEST_FRACTION,
        DEFAULT_VAL_FRACTION,
        SPLITS,
        SPLITS_FILE,
        Splits,
        check_fractions,
        dataset_drama_ids,
        ensure_splits,
        read_splits,
        write_splits,
    )

    file = args.file if args.file is not None else args.root / SPLITS_FILE
    try:
        ids = dataset_drama_ids(args.root)
        if not ids:
            raise DataError(args.root, "no dramas found (a drama folder holds its *.json directly)")
        if file.is_file():
            old = read_splits(file)
            if args.force and old.matches(args.val, args.test, args.seed):
                val = old.val_fraction if args.val is None else args.val
                test = old.test_fraction if args.test is None else args.test
                seed = old.seed if args.seed is None else args.seed
                check_fractions(val, test)
                new = write_splits(file, Splits.create(set(ids) | set(old.assignment), val, test, seed))
                moved = sorted(
                    (i, old.assignment[i], new.assignment[i])
                    for i in old.assignment
                    if old.assignment[i] != new.assignment[i]
                )
                print(f"re-split: {len(moved)} drama(s) changed split")
                for drama, a, b in moved:
                    print(f"  {drama}: {a} -> {b}")
                left_test = [d for d, a, _ in moved if a == "test"]
                if left_test:
                    print(
                        f"warning: {len(left_test)} former test drama(s) left the test split; results on the "
                        "old test split are not comparable with new ones",
                        file=sys.stderr,
                    )
                splits = new
            else:
                splits = ensure_splits(
                    args.root, ids, args.val, args.test, args.seed, path=file, hint="(or pass --force)"
                )
        else:
            splits = ensure_splits(
                args.root,
                ids,
                DEFAULT_VAL_FRACTION if args.val is None else args.val,
                DEFAULT_TEST_FRACTION if args.test is None else args.test,
                DEFAULT_SEED if args.seed is None else args.seed,
                path=file,
            )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = splits.counts()
    print(
        f"{splits.path}: {len(splits.assignment)} dramas ({', '.join(f'{s} {counts[s]}' for s in SPLITS)}); "
        f"seed {splits.seed}, val_fraction {splits.val_fraction}, test_fraction {splits.test_fraction}; "
        f"digest {splits.digest[:12]}"
    )
    return 0
