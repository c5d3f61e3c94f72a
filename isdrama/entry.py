"""Console-script wrapper for the top-level entry script train.py (`isdrama-infer` is
:mod:`isdrama.inference.cli`, an argparse front end; ``python infer.py`` takes Hydra overrides).

They run from a source checkout (``pip install -e .``): the Hydra config tree lives in
``configs/`` beside the package.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _run_script(name: str) -> None:
    script = PROJECT_ROOT / name
    if not script.is_file() or not (PROJECT_ROOT / "configs").is_dir():
        sys.exit(
            f"error: {script} or {PROJECT_ROOT / 'configs'} not found; the isdrama-train "
            "command needs a source checkout installed with `pip install -e .`"
        )
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")


def train_main() -> None:
    """`isdrama-train` = `python train.py` (Hydra overrides as arguments)."""
    _run_script("train.py")
