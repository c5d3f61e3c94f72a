"""Reader for the MRSDrama layout (real or synthetic): folders + JSON -> DramaScene / DramaLine.

Layout (docs/data-format.md): ROOT/[<set>/]<drama>/ holding one annotation JSON, wav/, an
optional mp4 and geometric_pose/*.npy. Every error is a DataError naming the file and the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from isdrama.data.schema import DataError, DatasetIndex, DramaLine, DramaScene

#: Keys every item must carry (item_name may instead be the key of a dict-form JSON).
REQUIRED_ITEM_KEYS = ("speaker", "raw_txt", "word", "word_dur", "start_time", "end_time")
#: Keys that may be given once at drama level and apply to every item.
DRAMA_LEVEL_KEYS = ("pos_fn", "spatial_prompt", "scene", "language", "video_fn")
#: Folder names never treated as dramas (caches, hidden folders are skipped too).
_SKIP_DIRS = {"wav", "geometric_pose", "__pycache__"}
DEFAULT_LANGUAGE = "zh"


@dataclass
class ScanResult:
    """What a tolerant scan found: the readable scenes and every problem."""

    index: DatasetIndex
    problems: list[DataError] = field(default_factory=list)


def resolve_inside(root: Path, base: Path, rel: str, json_path: Path, key: str) -> Path:
    """Resolve ``rel`` against ``base``; refuse a path that escapes ``root``."""
    if not isinstance(rel, str) or not rel.strip():
        raise DataError(json_path, f"expected a non-empty path string, got {rel!r}", key)
    candidate = Path(rel)
    path = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(json_path, f"path '{rel}' resolves to {path}, outside the dataset root {root}", key)
    return path


def find_drama_dirs(root: Path) -> list[tuple[str, Path]]:
    """(set_name, drama_dir) for every drama folder at depth 1 or 2 under ``root``.

    A drama folder holds at least one ``*.json`` directly. At depth 1 its set name is "".
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root is not a directory")
    found: list[tuple[str, Path]] = []

    def subdirs(p: Path) -> list[Path]:
        return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in _SKIP_DIRS)

    for first in subdirs(root):
        if any(first.glob("*.json")):
            found.append(("", first))
            continue
        for second in subdirs(first):
            if any(second.glob("*.json")):
                found.append((first.name, second))
    return found


def _items_from_json(obj: Any, json_path: Path) -> tuple[list[dict], dict]:
    """Normalise the three accepted JSON shapes to (items, drama-level defaults)."""
    if isinstance(obj, list):
        items, defaults = obj, {}
    elif isinstance(obj, dict) and "items" in obj:
        items = obj["items"]
        defaults = {k: v for k, v in obj.items() if k != "items"}
        if not isinstance(items, list):
            raise DataError(json_path, f"expected a list of items, got {type(items).__name__}", "items")
    elif isinstance(obj, dict):
        items, defaults = [], {}
        for name, item in obj.items():
            if name in DRAMA_LEVEL_KEYS:
                defaults[name] = item
                continue
            if not isinstance(item, dict):
                raise DataError(json_path, f"expected an item object, got {type(item).__name__}", name)
            items.append({"item_name": name, **item})
    else:
        raise DataError(json_path, f"expected a list or an object at top level, got {type(obj).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(json_path, f"expected an item object, got {type(item).__name__}", f"[{i}]")
    return items, defaults


def _number(item: dict, key: str, json_path: Path, where: str) -> float:
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(json_path, f"expected a finite number, got {value!r}", f"{where}.{key}")
    return float(value)


def _parse_item(
    item: dict,
    idx: int,
    defaults: dict,
    drama_id: str,
    set_name: str,
    drama_dir: Path,
    root: Path,
    json_path: Path,
    video_path: Optional[Path],
) -> DramaLine:
    name = item.get("item_name")
    where = f"[{idx}]" if not isinstance(name, str) else str(name)
    if not isinstance(name, str) or not name:
        raise DataError(json_path, f"missing or empty item name, got {name!r}", f"[{idx}].item_name")
    for key in REQUIRED_ITEM_KEYS:
        if key not in item:
            raise DataError(json_path, "required key is missing", f"{where}.{key}")
    get = lambda k: item.get(k, defaults.get(k))  # noqa: E731  item overrides drama level

    speaker, text = item["speaker"], item["raw_txt"]
    for key, value in (("speaker", speaker), ("raw_txt", text)):
        if not isinstance(value, str):
            raise DataError(json_path, f"expected a string, got {value!r}", f"{where}.{key}")
    words, durs = item["word"], item["word_dur"]
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataError(json_path, "expected a list of strings", f"{where}.word")
    if not isinstance(durs, list) or not all(
        isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d >= 0 for d in durs
    ):
        raise DataError(json_path, "expected a list of non-negative finite numbers (seconds)", f"{where}.word_dur")
    if len(words) != len(durs):
        raise DataError(json_path, f"{len(words)} words but {len(durs)} durations", f"{where}.word_dur")
    start = _number(item, "start_time", json_path, where)
    end = _number(item, "end_time", json_path, where)
    if not end > start:
        raise DataError(json_path, f"end_time {end} is not after start_time {start}", f"{where}.end_time")

    wav_rel = get("wav_fn") or f"wav/{name}.wav"
    wav_path = resolve_inside(root, drama_dir, wav_rel, json_path, f"{where}.wav_fn")
    pose_rel = get("pos_fn")
    if pose_rel is not None:
        pose_path: Optional[Path] = resolve_inside(root, drama_dir, pose_rel, json_path, f"{where}.pos_fn")
    else:
        default_pose = drama_dir / "geometric_pose" / f"{name}.npy"
        pose_path = default_pose if default_pose.is_file() else None
    video_rel = get("video_fn")
    line_video = (
        resolve_inside(root, drama_dir, video_rel, json_path, f"{where}.video_fn")
        if video_rel is not None
        else video_path
    )
    prompt = get("spatial_prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise DataError(json_path, f"expected a string, got {prompt!r}", f"{where}.spatial_prompt")
    scene = get("scene")
    language = get("language") or DEFAULT_LANGUAGE
    phones = item.get("ph")
    phone_durs = item.get("ph_dur")
    if (phones is None) != (phone_durs is None) or (phones is not None and len(phones) != len(phone_durs)):
        raise DataError(json_path, "'ph' and 'ph_dur' must both be present with equal lengths", f"{where}.ph_dur")
    return DramaLine(
        drama_id=drama_id,
        line_id=name,
        speaker=speaker,
        text=text,
        words=tuple(words),
        word_durations=tuple(float(d) for d in durs),
        start=start,
        end=end,
        wav_path=wav_path,
        pose_path=pose_path,
        pose_prompt=prompt,
        scene_id=None if scene is None else str(scene),
        video_path=line_video,
        set_name=set_name,
        language=str(language),
        phones=None if phones is None else tuple(str(p) for p in phones),
        phone_durations=None if phone_durs is None else tuple(float(d) for d in phone_durs),
    )


def load_scene(drama_dir: Path, root: Path, set_name: str = "") -> DramaScene:
    """Read one drama folder into a DramaScene (lines sorted by start time).

    Raises DataError for a missing/ambiguous JSON, malformed JSON, a missing required key,
    inconsistent values or a path escaping ``root``.
    """
    drama_dir = Path(drama_dir)
    jsons = sorted(drama_dir.glob("*.json"))
    if not jsons:
        raise DataError(drama_dir, "no annotation JSON in the drama folder")
    preferred = drama_dir / f"{drama_dir.name}.json"
    if len(jsons) > 1 and preferred not in jsons:
        raise DataError(
            drama_dir, f"several JSON files and none named {preferred.name}: {', '.join(p.name for p in jsons)}"
        )
    json_path = preferred if preferred in jsons else jsons[0]
    try:
        obj = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(json_path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(json_path, f"not UTF-8 text: {exc}") from exc
    items, defaults = _items_from_json(obj, json_path)
    if not items:
        raise DataError(json_path, "no items (lines) in the annotation")
    mp4s = sorted(drama_dir.glob("*.mp4"))
    video_path = (
        (drama_dir / f"{drama_dir.name}.mp4")
        if (drama_dir / f"{drama_dir.name}.mp4") in mp4s
        else (mp4s[0] if len(mp4s) == 1 else None)
    )
    drama_id = drama_dir.name
    lines = [
        _parse_item(item, i, defaults, drama_id, set_name, drama_dir, Path(root), json_path, video_path)
        for i, item in enumerate(items)
    ]
    names = [line.line_id for line in lines]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(json_path, f"duplicate item names: {', '.join(dup[:5])}", "item_name")
    lines.sort(key=lambda line: (line.start, line.line_id))
    scene_ids = {line.scene_id for line in lines if line.scene_id is not None}
    return DramaScene(
        drama_id=drama_id,
        directory=drama_dir.resolve(),
        json_path=json_path,
        lines=tuple(lines),
        set_name=set_name,
        video_path=video_path,
        scene_id=next(iter(scene_ids)) if len(scene_ids) == 1 else None,
    )


def scan_dataset(root: Path | str) -> ScanResult:
    """Read every drama under ``root``, collecting problems instead of stopping at the first."""
    root = Path(root)
    result = ScanResult(index=DatasetIndex(root=root.resolve()))
    for set_name, drama_dir in find_drama_dirs(root):
        try:
            result.index.scenes.append(load_scene(drama_dir, root, set_name))
        except DataError as exc:
            result.problems.append(exc)
    if not result.index.scenes and not result.problems:
        result.problems.append(DataError(root, "no drama folders found (expected ROOT/[set/]drama/drama.json)"))
    return result


def load_dataset(root: Path | str) -> DatasetIndex:
    """Read every drama under ``root``; raise the first DataError (see ``scan_dataset``)."""
    result = scan_dataset(root)
    if result.problems:
        first = result.problems[0]
        if len(result.problems) > 1:
            raise DataError(
                root,
                f"{len(result.problems)} problems, the first: {first} "
                "(run `isdrama-data check ROOT` for the full list)",
            )
        raise first
    return result.index


def iter_lines(index: DatasetIndex, sets: Optional[Iterable[str]] = None) -> list[DramaLine]:
    """Lines of the chosen sets (all when ``sets`` is None)."""
    wanted = None if sets is None else set(sets)
    return [line for scene in index.scenes if wanted is None or scene.set_name in wanted for line in scene.lines]
