"""Train/val/test split by drama, written once as ``splits.json`` and read by every tool.

Whole dramas go to one split, so no drama (and no recording session) leaks across splits.

The rule. Every drama id (``DramaScene.key``: ``set/drama``, or ``drama`` without a set level)
gets a point ``u = int(sha1(f"{seed}:{id}")) / 2**160`` in [0, 1). Then

    test   if u < test_fraction
    val    if test_fraction <= u < test_fraction + val_fraction
    train  otherwise

so a drama's split is a pure function of its id, the seed and the two fractions: adding or
removing dramas moves no other drama, and test membership depends on ``(id, seed,
test_fraction)`` only, so changing ``val_fraction`` never moves a test drama.

Small datasets. A pure threshold can leave a requested split empty (24 dramas at
``test_fraction=0.1`` have no test drama with probability 0.9**24 = 8 %). When a split is
computed from scratch over at least 3 dramas:
  - if ``test_fraction > 0`` and no drama fell under it, the drama with the smallest ``u`` goes to
    test (this depends on the ids, the seed and ``test_fraction`` only, never on ``val_fraction``);
  - then if ``val_fraction > 0`` and val is empty while train holds at least 2 dramas, the train
    drama with the smallest ``u`` goes to val.
With fewer than 3 dramas nothing is moved and an empty split stays empty (the data module says so
when that split's loader is asked for). The result is written to ``splits.json``; dramas that
appear later are assigned by the pure threshold alone and added to the file, so nothing that was
written ever moves.

The file (``ROOT/splits.json`` by default, or any path given to the tools):

    {"version": 1, "seed": 0, "val_fraction": 0.15, "test_fraction": 0.1,
     "digest": "<sha1 of the sorted 'split<TAB>id' lines>",
     "train": [...ids], "val": [...ids], "test": [...ids]}

Training (the data module), ``isdrama-data resynth``, ``isdrama-eval --splits`` and
``isdrama-data split`` read it through :func:`ensure_splits` / :func:`load_splits`; a tool asked
for other fractions or another seed than the file holds stops with an error naming the file and
the fields instead of re-splitting. Inference batch mode (not built yet) is meant to call
``load_splits(root).split_of(drama_id)`` the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from isdrama.data.schema import DataError, DramaScene

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: File name of the split file inside a dataset root.
SPLITS_FILE = "splits.json"
SPLITS_VERSION = 1
#: Fractions and seed of ``isdrama-data synth`` / ``isdrama-data split`` when none are given; the
#: synthetic-data config (configs/data/synth_demo.yaml) holds the same values (a test checks it).
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.1
DEFAULT_SEED = 0
#: Smallest dataset on which the small-dataset rule fills an empty requested split.
MIN_DRAMAS_FOR_FALLBACK = 3
_TOL = 1e-12


class SplitsError(DataError):
    """``splits.json`` is missing, malformed, or does not match what a tool asked for.

    The message names the file and, where there is one, the field.
    """


def split_point(drama_id: str, seed: int) -> float:
    """The drama's uniform point in [0, 1): ``sha1(f"{seed}:{drama_id}")`` as an integer / 2**160."""
    digest = hashlib.sha1(f"{seed}:{drama_id}".encode("utf-8")).digest()
    return int.from_bytes(digest, "big") / 2**160


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ValueError unless both fractions are in [0, 1) and sum below 1."""
    ok = all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in (val_fraction, test_fraction))
    if not (ok and 0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"split fractions must be numbers in [0, 1) that sum below 1; got val={val_fraction!r}, "
            f"test={test_fraction!r}"
        )


def threshold_split(drama_id: str, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """The pure rule: "test" below ``test_fraction``, "val" below ``test_fraction + val_fraction``."""
    u = split_point(drama_id, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(drama_ids: Iterable[str], val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, str]:
    """drama id -> split for a split computed from scratch: the pure rule, then the small-dataset
    rule (module docstring) for a requested split left empty."""
    check_fractions(val_fraction, test_fraction)
    ids = sorted(set(drama_ids))
    points = {i: split_point(i, seed) for i in ids}
    out = {i: threshold_split(i, val_fraction, test_fraction, seed) for i in ids}
    if len(ids) < MIN_DRAMAS_FOR_FALLBACK:
        return out
    by_point = sorted(ids, key=lambda i: (points[i], i))
    if test_fraction > 0 and "test" not in out.values():
        out[by_point[0]] = "test"
    train = [i for i in by_point if out[i] == "train"]
    if val_fraction > 0 and "val" not in out.values() and len(train) >= 2:
        out[train[0]] = "val"
    return out


def _digest(assignment: Mapping[str, str]) -> str:
    text = "\n".join(f"{split}\t{i}" for i, split in sorted(assignment.items(), key=lambda kv: (kv[1], kv[0])))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Splits:
    """A drama split: the parameters it was made with and every drama's split.

    ``path`` is the file it was read from or written to (None for one only in memory).
    """

    seed: int
    val_fraction: float
    test_fraction: float
    assignment: Mapping[str, str] = field(default_factory=dict)
    path: Optional[Path] = None

    @classmethod
    def create(
        cls,
        drama_ids: Iterable[str],
        val_fraction: float,
        test_fraction: float,
        seed: int = 0,
        path: Optional[Path] = None,
    ) -> "Splits":
        """A split from scratch (pure rule + small-dataset rule)."""
        return cls(
            int(seed),
            float(val_fraction),
            float(test_fraction),
            assign_splits(drama_ids, val_fraction, test_fraction, seed),
            path,
        )

    @property
    def digest(self) -> str:
        """sha1 of the assignment (sorted ``split<TAB>id`` lines): equal digests, equal splits."""
        return _digest(self.assignment)

    def ids(self, split: str) -> list[str]:
        """Sorted drama ids of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        return sorted(i for i, s in self.assignment.items() if s == split)

    def split_of(self, drama_id: str) -> str:
        """The split of one drama; a SplitsError when the file does not list it."""
        try:
            return self.assignment[drama_id]
        except KeyError:
            raise SplitsError(
                self.path or "splits",
                f"drama '{drama_id}' is not listed (load the dataset with ensure_splits to add new dramas)",
            ) from None

    def partition(self, scenes: Sequence[DramaScene]) -> dict[str, list[DramaScene]]:
        """split -> the given scenes in it (scenes keep their order)."""
        out: dict[str, list[DramaScene]] = {s: [] for s in SPLITS}
        for scene in scenes:
            out[self.split_of(scene.key)].append(scene)
        return out

    def matches(self, val_fraction: Optional[float], test_fraction: Optional[float], seed: Optional[int]) -> list[str]:
        """Fields that differ from the given values (None = not asked, matches anything)."""
        bad = []
        for name, asked, have in (
            ("val_fraction", val_fraction, self.val_fraction),
            ("test_fraction", test_fraction, self.test_fraction),
            ("seed", seed, self.seed),
        ):
            if asked is not None and abs(float(asked) - float(have)) > _TOL:
                bad.append(f"{name}={have!r} (asked for {asked!r})")
        return bad

    def with_dramas(self, drama_ids: Iterable[str]) -> tuple["Splits", list[str]]:
        """This split plus every unlisted id, each by the pure rule; returns (splits, added ids)."""
        added = sorted(set(drama_ids) - set(self.assignment))
        if not added:
            return self, []
        assignment = dict(self.assignment)
        for i in added:
            assignment[i] = threshold_split(i, self.val_fraction, self.test_fraction, self.seed)
        return Splits(self.seed, self.val_fraction, self.test_fraction, assignment, self.path), added

    def counts(self) -> dict[str, int]:
        return {s: len(self.ids(s)) for s in SPLITS}

    def to_json(self) -> dict:
        return {
            "version": SPLITS_VERSION,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "digest": self.digest,
            **{s: self.ids(s) for s in SPLITS},
        }

    def drama_of_name(self, name: str) -> Optional[str]:
        """The listed drama a file name belongs to: a line key (``set/drama/line``) or its flat form
        (``set__drama__line``, what ``isdrama-data resynth`` writes); the longest matching id wins."""
        flat = name.replace("/", "__")
        best = None
        for drama_id in self.assignment:
            prefix = drama_id.replace("/", "__") + "__"
            if flat.startswith(prefix) and (best is None or len(drama_id) > len(best)):
                best = drama_id
        return best

    def check_names(self, names: Iterable[str], split: str = "test") -> None:
        """Raise a SplitsError unless every file name belongs to a drama of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        unknown, elsewhere = [], []
        for name in names:
            drama = self.drama_of_name(name)
            if drama is None:
                unknown.append(name)
            elif self.assignment[drama] != split:
                elsewhere.append(f"{name} ({self.assignment[drama]})")
        if not unknown and not elsewhere:
            return
        msg = []
        if elsewhere:
            msg.append(f"{len(elsewhere)} file(s) from dramas outside the {split} split: {_show(elsewhere)}")
        if unknown:
            msg.append(f"{len(unknown)} file(s) of no listed drama: {_show(unknown)}")
        raise SplitsError(self.path or "splits", "; ".join(msg))


def _show(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def splits_path(root_or_file: Path | str) -> Path:
    """A ``*.json`` path as is; anything else is a dataset root holding ``splits.json``."""
    p = Path(root_or_file)
    return p if p.suffix == ".json" and not p.is_dir() else p / SPLITS_FILE


def _number(path: Path, data: dict, name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SplitsError(path, f"expected a number in [0, 1), got {value!r}", name)
    return float(value)


def parse_splits(data: object, path: Path | str = "splits.json") -> Splits:
    """Validate a decoded ``splits.json``; every error names the file and the field."""
    path = Path(path)
    if not isinstance(data, dict):
        raise SplitsError(path, f"expected a JSON object, got {type(data).__name__}")
    missing = [k for k in ("version", "seed", "val_fraction", "test_fraction", *SPLITS) if k not in data]
    if missing:
        raise SplitsError(path, f"missing field(s) {', '.join(missing)}", missing[0])
    if data["version"] != SPLITS_VERSION:
        raise SplitsError(
            path, f"unsupported version {data['version']!r} (this isdrama reads {SPLITS_VERSION})", "version"
        )
    seed = data["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SplitsError(path, f"expected an integer, got {seed!r}", "seed")
    val, test = _number(path, data, "val_fraction"), _number(path, data, "test_fraction")
    if val + test >= 1:
        raise SplitsError(path, f"val_fraction + test_fraction must be below 1, got {val} + {test}", "val_fraction")
    assignment: dict[str, str] = {}
    for split in SPLITS:
        ids = data[split]
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise SplitsError(path, "expected a list of drama ids (non-empty strings)", split)
        for i in ids:
            if i in assignment:
                raise SplitsError(path, f"drama '{i}' is listed in both {assignment[i]} and {split}", split)
            assignment[i] = split
    splits = Splits(seed, val, test, assignment, path)
    if "digest" in data and data["digest"] != splits.digest:
        raise SplitsError(
            path,
            "does not match the listed dramas (the lists were edited, or the file is damaged); "
            "delete the 'digest' field to accept the lists as they are, or rewrite the file with "
            "`isdrama-data split ROOT --force`",
            "digest",
        )
    return splits


def read_splits(path: Path | str) -> Splits:
    """Read and validate a split file (SplitsError when missing or malformed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SplitsError(
            path, "split file not found; write it with `isdrama-data split ROOT` (or let training create it)"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SplitsError(path, f"malformed JSON ({exc.msg} at line {exc.lineno})") from exc
    return parse_splits(data, path)


def write_splits(path: Path | str, splits: Splits) -> Splits:
    """Write ``splits`` to ``path`` atomically; returns it with ``path`` set."""
    from isdrama.utils.io import atomic_write_json

    path = Path(path)
    try:
        atomic_write_json(path, splits.to_json())
    except OSError as exc:
        raise SplitsError(
            path,
            f"cannot write the split file ({exc.strerror or exc}); point the tool at a "
            "writable path (data.splits_file=PATH, or --splits PATH)",
        ) from exc
    return Splits(splits.seed, splits.val_fraction, splits.test_fraction, splits.assignment, path)


def load_splits(root_or_file: Path | str) -> Splits:
    """The split of a dataset root (its ``splits.json``) or of a split file.

    For tools that only read, e.g. inference batch mode: ``load_splits(root).split_of(drama_id)``.
    """
    return read_splits(splits_path(root_or_file))


def ensure_splits(
    root: Path | str,
    drama_ids: Iterable[str],
    val_fraction: Optional[float] = None,
    test_fraction: Optional[float] = None,
    seed: Optional[int] = None,
    path: Optional[Path | str] = None,
    hint: str = "",
) -> Splits:
    """The dataset's split, creating or extending its file as needed.

    Args:
        root: dataset root; the file is ``path`` or ``ROOT/splits.json``.
        drama_ids: every drama id of the dataset (``DramaScene.key``).
        val_fraction / test_fraction / seed: what the caller wants. When the file exists they
            must equal its fields (None: take the file's); a difference is a SplitsError naming
            the file and the fields, never a silent re-split. When it does not exist, all three
            are needed to create it.
        path: the split file (default ``ROOT/splits.json``).
        hint: appended to errors (how this tool sets the values, e.g. the config keys).

    Dramas of the dataset that the file does not list are assigned by the pure rule and the file
    is rewritten (atomically); dramas the file lists but the dataset lacks stay listed.
    """
    file = Path(path) if path is not None else Path(root) / SPLITS_FILE
    ids = list(drama_ids)
    suffix = f" {hint}" if hint else ""
    if not file.is_file():
        if val_fraction is None or test_fraction is None or seed is None:
            raise SplitsError(
                file,
                f"split file not found; write it with `isdrama-data split ROOT [--val V --test T --seed S]`{suffix}",
            )
        splits = write_splits(file, Splits.create(ids, val_fraction, test_fraction, seed))
        c = splits.counts()
        log.info(
            "%s: new split of %d dramas (train %d, val %d, test %d; seed %d, val %.3g, test %.3g)",
            file,
            len(ids),
            c["train"],
            c["val"],
            c["test"],
            splits.seed,
            splits.val_fraction,
            splits.test_fraction,
        )
        return splits
    splits = read_splits(file)
    bad = splits.matches(val_fraction, test_fraction, seed)
    if bad:
        want = [
            splits.val_fraction if val_fraction is None else val_fraction,
            splits.test_fraction if test_fraction is None else test_fraction,
            splits.seed if seed is None else seed,
        ]
        raise SplitsError(
            file,
            f"the split file holds {', '.join(bad)}. Use the file's values, or re-split "
            f"on purpose with `isdrama-data split {Path(root)} --val {want[0]} --test {want[1]} "
            f"--seed {want[2]} --force` (moves dramas between splits; results on the old split "
            f"stop being comparable).{suffix}",
        )
    grown, added = splits.with_dramas(ids)
    if added:
        log.info("%s: %d new drama(s) assigned by the threshold rule: %s", file, len(added), _show(added))
        grown = write_splits(file, grown)
    return grown


def dataset_drama_ids(root: Path | str) -> list[str]:
    """Every drama id under ``root`` from the folder layout alone (no annotation is parsed); equal to
    the ``DramaScene.key`` values ``load_dataset`` gives for a valid dataset."""
    from isdrama.data.mrsdrama import find_drama_dirs

    return sorted("/".join(p for p in (set_name, d.name) if p) for set_name, d in find_drama_dirs(Path(root)))


def update_splits(root: Path | str, path: Optional[Path | str] = None) -> Splits:
    """Extend the dataset's split file with unlisted dramas, or create it with the default fractions
    and seed (what ``isdrama-data synth`` calls after writing dramas)."""
    file = Path(path) if path is not None else Path(root) / SPLITS_FILE
    defaults = (None, None, None) if file.is_file() else (DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION, DEFAULT_SEED)
    return ensure_splits(root, dataset_drama_ids(root), *defaults, path=file)


def split_scenes(
    scenes: Sequence[DramaScene],
    val_fraction: float,
    test_fraction: float,
    seed: int = 0,
) -> dict[str, list[DramaScene]]:
    """Scenes by split for a split computed from scratch, in memory (no file; see ``assign_splits``)."""
    return Splits.create([s.key for s in scenes], val_fraction, test_fraction, seed).partition(scenes)


__all__ = [
    "SPLITS",
    "SPLITS_FILE",
    "DEFAULT_VAL_FRACTION",
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_SEED",
    "Splits",
    "SplitsError",
    "split_point",
    "threshold_split",
    "assign_splits",
    "split_scenes",
    "splits_path",
    "parse_splits",
    "read_splits",
    "write_splits",
    "load_splits",
    "ensure_splits",
    "update_splits",
    "dataset_drama_ids",
    "check_fractions",
]
