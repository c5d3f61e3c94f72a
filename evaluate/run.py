"""Evaluation entry: `python evaluate/run.py GT_DIR INFER_DIR [options]` (same as `isdrama-eval`).

The published ISDrama evaluation, fixed and extended: IPD/ILD MAE (reference or corrected mode),
ANG/DIS Cos with the BAT SpatialAST encoder, CER, SIM and FFE. See `--help` and evaluate/README.md.
"""

import sys

from isdrama.metrics.cli import main

if __name__ == "__main__":
    sys.exit(main())
