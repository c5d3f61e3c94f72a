"""Train/val/test split by drama, so no drama (and no recording session) leaks across splits."""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

from isdrama.data.schema import DramaScene

SPLITS = ("train", "val", "test")


def _rank(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def split_scenes(scenes: Sequence[DramaScene], val_fraction: float, test_fraction: float, seed: int = 0,
                 ) -> dict[str, list[DramaScene]]:
    """Assign whole dramas to splits by a seeded hash of their key.

    Stable: adding a drama never moves another one. With at least 3 dramas each requested
    non-empty split gets at least one drama.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"split fractions must be in [0, 1) and sum below 1; got val={val_fraction}, "
                         f"test={test_fraction}")
    ordered = sorted(scenes, key=lambda s: _rank(s.key, seed))
    n = len(ordered)
    n_val = math.ceil(val_fraction * n) if val_fraction > 0 and n >= 3 else round(val_fraction * n)
    n_test = math.ceil(test_fraction * n) if test_fraction > 0 and n >= 3 else round(test_fraction * n)
    return {"val": ordered[:n_val], "test": ordered[n_val:n_val + n_test], "train": ordered[n_val + n_test:]}
