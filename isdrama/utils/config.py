"""Config values (Hydra / OmegaConf or plain mappings) -> plain containers and dataclasses.

``build_config(Cls, values, "model.content")`` is the one way a config group becomes a config
dataclass: unknown keys and missing required fields raise a ValueError naming the config path,
the dataclass and the keys; nested dataclass fields are built from nested mappings.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

T = TypeVar("T")


def to_plain(value: Any) -> Any:
    """OmegaConf containers -> plain (resolved) dict / list, also inside plain dicts, lists and
    tuples; anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def _dataclass_type(cls: type, field: dataclasses.Field) -> Optional[type]:
    """The dataclass type of a field (from its default or its ``C`` / ``Optional[C]`` hint), else None."""
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return type(default)
    try:
        hint = typing.get_type_hints(cls).get(field.name)
    except (NameError, TypeError):  # a hint only importable under TYPE_CHECKING
        return None
    candidates = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    found = [c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)]
    return found[0] if len(found) == 1 else None


def build_config(cls: type[T], values: Optional[Mapping[str, Any]], where: str, **fixed: Any) -> T:
    """Dataclass ``cls`` from a (nested) mapping; ``fixed`` keyword values override ``values``.

    Args:
        cls: a dataclass type.
        values: a mapping or DictConfig of field values (None = empty); an instance of ``cls``
            is returned as it is.
        where: the config path for error messages (e.g. ``model.pose_encoder``).

    Raises:
        ValueError: unknown keys or missing required fields, naming ``where``, ``cls`` and the keys.
    """
    if isinstance(values, cls) and not fixed:
        return values
    data = to_plain(dict(to_plain(values) or {}))
    data.update(fixed)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} ({cls.__name__} fields: {sorted(known)})")
    missing = sorted(
        name
        for name, f in known.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(
            f"{where}: missing key(s) {missing} ({cls.__name__} has no defaults for them; set them in the config)"
        )
    for name, value in data.items():
        sub = _dataclass_type(cls, known[name]) if isinstance(value, Mapping) else None
        if sub is not None:
            data[name] = build_config(sub, value, f"{where}.{name}")
    return cls(**data)


__all__ = ["build_config", "to_plain"]


#: the project's Hydra configs (an editable install or a checkout)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def project_config(name: str) -> dict[str, Any]:
    """A top-level YAML of configs/ (no defaults list, no interpolation across groups) as plain
    containers, e.g. ``project_config("infer")`` for the inference defaults of the Python API."""
    from omegaconf import OmegaConf

    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: project config not found (is isdrama installed from a checkout?)")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
