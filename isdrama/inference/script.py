"""The drama script: what `isdrama-infer` turns into a binaural drama (docs/drama-script.md).

A YAML (or JSON) file with ``speakers`` (name, prompt wav, optional prompt text, language), an
optional ``scene`` (description, room, video) and ``lines`` in order (speaker, text, optional
language / pause / seed / duration and exactly one pose: ``trajectory``, ``pose_file``,
``pose_text`` or ``video``). :func:`load_script` validates everything it can without a model and
raises :class:`ScriptError` naming the file, the line and the field. Paths are relative to the
script's folder.

Listener frame (as MRSDrama): metres, x right, y front, z up, the head centre at the origin.
Azimuths are clockwise from the front in degrees (0 front, +90 right, -90 left, 180 back),
elevation up from the horizontal plane.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

#: languages the content tokenizer covers (pinyin phones for Mandarin, characters for English)
SUPPORTED_LANGUAGES = ("en", "zh")
POSE_KINDS = ("trajectory", "pose_file", "pose_text", "video")
POSTURES = ("standing", "sitting")
#: silence before a line when the script gives none (the first line gets none)
DEFAULT_PAUSE = 0.3


class ScriptError(ValueError):
    """A drama script problem; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Speaker:
    name: str
    prompt: Path
    language: str
    prompt_text: Optional[str] = None


@dataclass(frozen=True)
class Waypoint:
    """A mouth position (listener frame, metres) at ``t`` seconds from the line start."""

    t: float
    position: tuple[float, float, float]


@dataclass(frozen=True)
class TrajectoryPose:
    """Waypoints (times strictly increasing; one = static), posture, facing: ``listener``,
    ``path`` (walking direction, then the listener) or a yaw in degrees (0 = facing +y)."""

    waypoints: tuple[Waypoint, ...]
    posture: str
    facing: Any

    @property
    def span(self) -> Optional[float]:
        """Seconds the waypoints cover (None for a single waypoint)."""
        return self.waypoints[-1].t if len(self.waypoints) > 1 else None


@dataclass(frozen=True)
class VideoSpan:
    path: Path
    start: float
    end: float

    @property
    def span(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Line:
    """One line; ``pose_kind`` names which of trajectory / pose_file / pose_text / video is set."""

    index: int
    speaker: str
    text: str
    language: str
    pause: float
    pose_kind: str
    trajectory: Optional[TrajectoryPose] = None
    pose_file: Optional[Path] = None
    pose_text: Optional[str] = None
    video: Optional[VideoSpan] = None
    duration: Optional[float] = None
    seed: Optional[int] = None

    @property
    def pose_description(self) -> Any:
        """The pose as the manifest records it."""
        if self.pose_kind == "trajectory":
            t = self.trajectory
            return {
                "waypoints": [
                    {"t": w.t, "x": w.position[0], "y": w.position[1], "z": w.position[2]} for w in t.waypoints
                ],
                "posture": t.posture,
                "facing": t.facing,
            }
        if self.pose_kind == "pose_file":
            return str(self.pose_file)
        if self.pose_kind == "pose_text":
            return self.pose_text
        return {"path": str(self.video.path), "start": self.video.start, "end": self.video.end}


@dataclass(frozen=True)
class Scene:
    description: Optional[str] = None
    room: Optional[str] = None
    video: Optional[Path] = None


@dataclass(frozen=True)
class DramaScript:
    path: Optional[Path]
    speakers: dict[str, Speaker]
    lines: tuple[Line, ...]
    scene: Scene = field(default_factory=Scene)
    title: Optional[str] = None

    @property
    def pose_kinds(self) -> list[str]:
        return sorted({line.pose_kind for line in self.lines})


# ------------------------------------------------------------------------------------ parsing
class _Ctx:
    """Where an error happened: file + dotted field path."""

    def __init__(self, source: str, where: str = ""):
        self.source, self.where = source, where

    def at(self, key: Any) -> "_Ctx":
        part = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.where else str(key))
        return _Ctx(self.source, self.where + part)

    def error(self, message: str) -> ScriptError:
        return ScriptError(f"{self.source}: {self.where or 'script'}: {message}")


def _mapping(value: Any, ctx: _Ctx, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.error(f"must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ctx.error(f"unknown field(s) {unknown} (allowed: {list(allowed)})")
    return value


def _number(value: Any, ctx: _Ctx, minimum: Optional[float] = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ctx.error(f"must be a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ctx.error(f"must be > 0, got {value:g}")
    if minimum is not None and value < minimum:
        raise ctx.error(f"must be >= {minimum:g}, got {value:g}")
    return value


def _text(value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(f"must be a non-empty string, got {value!r}")
    return value.strip()


def _language(value: Any, ctx: _Ctx) -> str:
    lang = _text(value, ctx).lower()
    if lang not in SUPPORTED_LANGUAGES:
        raise ctx.error(f"unsupported language {lang!r} (supported: {list(SUPPORTED_LANGUAGES)})")
    return lang


def _file(value: Any, base: Path, ctx: _Ctx, what: str) -> Path:
    path = Path(_text(value, ctx)).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ctx.error(f"{what} not found: {path}")
    return path


def _prompt_wav(value: Any, base: Path, ctx: _Ctx) -> Path:
    import soundfile as sf

    path = _file(value, base, ctx, "prompt wav")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises its own error types
        raise ctx.error(f"cannot read prompt wav {path}: {exc}") from None
    if info.frames == 0:
        raise ctx.error(f"prompt wav {path} is empty")
    if info.channels not in (1, 2):
        raise ctx.error(f"prompt wav {path} has {info.channels} channels (mono or binaural expected)")
    return path


def _position(point: Mapping[str, Any], ctx: _Ctx) -> tuple[float, float, float]:
    cart = [k for k in ("x", "y", "z") if k in point]
    sph = [k for k in ("azimuth", "elevation", "distance") if k in point]
    if cart and sph:
        raise ctx.error("give x/y/z or azimuth/elevation/distance, not both")
    if cart:
        if "x" not in point or "y" not in point:
            raise ctx.error("a cartesian waypoint needs x and y (z defaults to 0)")
        xyz = tuple(_number(point.get(k, 0.0), ctx.at(k)) for k in ("x", "y", "z"))
    elif sph:
        if "azimuth" not in point or "distance" not in point:
            raise ctx.error("a spherical waypoint needs azimuth and distance (elevation defaults to 0)")
        az = math.radians(_number(point["azimuth"], ctx.at("azimuth")))
        el = math.radians(_number(point.get("elevation", 0.0), ctx.at("elevation")))
        r = _number(point["distance"], ctx.at("distance"), positive=True)
        xyz = (r * math.cos(el) * math.sin(az), r * math.cos(el) * math.cos(az), r * math.sin(el))
    else:
        raise ctx.error("a waypoint needs a position: x/y/z or azimuth/elevation/distance")
    if math.dist(xyz, (0.0, 0.0, 0.0)) < 0.3:
        raise ctx.error(f"position {tuple(round(v, 3) for v in xyz)} is inside the listener's head (< 0.3 m)")
    return xyz


def _trajectory(value: Any, ctx: _Ctx) -> TrajectoryPose:
    value = _mapping(value, ctx, ("waypoints", "posture", "facing"))
    raw = value.get("waypoints")
    wctx = ctx.at("waypoints")
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise wctx.error("must be a non-empty list of waypoints")
    points = []
    for i, p in enumerate(raw):
        pctx = wctx.at(i)
        p = _mapping(p, pctx, ("t", "x", "y", "z", "azimuth", "elevation", "distance"))
        t = _number(p.get("t", 0.0), pctx.at("t"), minimum=0.0)
        if points and t <= points[-1].t:
            raise pctx.at("t").error(f"waypoint times must increase: {t:g} s after {points[-1].t:g} s")
        points.append(Waypoint(t, _position(p, pctx)))
    if len(points) > 1 and points[0].t != 0.0:
        points.insert(0, Waypoint(0.0, points[0].position))  # hold the first position from the start
    posture = value.get("posture", "standing")
    if posture not in POSTURES:
        raise ctx.at("posture").error(f"must be one of {list(POSTURES)}, got {posture!r}")
    facing = value.get("facing", "listener")
    if not (facing in ("listener", "path") or (isinstance(facing, (int, float)) and not isinstance(facing, bool))):
        raise ctx.at("facing").error(f"must be 'listener', 'path' or a yaw in degrees, got {facing!r}")
    if posture == "sitting" and len(points) > 1 and any(p.position != points[0].position for p in points):
        raise ctx.error("a sitting speaker cannot walk: give one waypoint or posture: standing")
    return TrajectoryPose(tuple(points), posture, facing)


def video_duration(path: Path) -> float:
    """Seconds of an mp4 (frame count / fps, from OpenCV)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open video {path}")
        fps, n = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    if not fps or fps <= 0 or n <= 0:
        raise ValueError(f"video {path} reports fps={fps} and {n} frames")
    return float(n / fps)


def _video(value: Any, base: Path, ctx: _Ctx, scene_video: Optional[Path]) -> VideoSpan:
    value = _mapping(value, ctx, ("path", "start", "end"))
    if "path" in value:
        path = _file(value["path"], base, ctx.at("path"), "video")
    elif scene_video is not None:
        path = scene_video
    else:
        raise ctx.error("needs a path (or a scene.video)")
    start = _number(value.get("start", 0.0), ctx.at("start"), minimum=0.0)
    if "end" not in value:
        raise ctx.at("end").error("missing: the video span's end time (seconds)")
    end = _number(value["end"], ctx.at("end"))
    if end <= start:
        raise ctx.at("end").error(f"the span ends ({end:g} s) before it starts ({start:g} s)")
    try:
        total = video_duration(path)
    except ValueError as exc:
        raise ctx.at("path").error(str(exc)) from None
    if end > total + 1e-3:
        raise ctx.at("end").error(f"the span ends at {end:g} s but {path.name} lasts {total:.2f} s")
    return VideoSpan(path, start, end)


def _pose_file(value: Any, base: Path, ctx: _Ctx) -> Path:
    from isdrama.data.schema import DataError, validate_pose_array

    path = _file(value, base, ctx, "pose file")
    try:
        arr = np.load(path, allow_pickle=False)
        validate_pose_array(arr, path)
    except DataError as exc:
        raise ctx.error(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise ctx.error(f"cannot read pose file {path}: {exc}") from None
    return path


LINE_FIELDS = ("speaker", "text", "language", "pause", "duration", "seed") + POSE_KINDS


def parse_script(data: Any, source: str = "<script>", base: Optional[Path] = None) -> DramaScript:
    """A validated :class:`DramaScript` from parsed YAML/JSON ``data``; ``base``: folder of
    relative paths (default: the current one)."""
    base = Path(".") if base is None else Path(base)
    root = _Ctx(source)
    data = _mapping(data, root, ("title", "speakers", "scene", "lines"))
    scene_raw = data.get("scene") or {}
    sctx = root.at("scene")
    scene_raw = _mapping(scene_raw, sctx, ("description", "room", "video"))
    scene = Scene(
        description=_text(scene_raw["description"], sctx.at("description")) if "description" in scene_raw else None,
        room=_text(scene_raw["room"], sctx.at("room")) if "room" in scene_raw else None,
        video=_file(scene_raw["video"], base, sctx.at("video"), "scene video") if "video" in scene_raw else None,
    )
    raw_speakers = data.get("speakers")
    spctx = root.at("speakers")
    if not isinstance(raw_speakers, Sequence) or isinstance(raw_speakers, str) or not raw_speakers:
        raise spctx.error("must be a non-empty list of speakers")
    speakers: dict[str, Speaker] = {}
    for i, s in enumerate(raw_speakers):
        c = spctx.at(i)
        s = _mapping(s, c, ("name", "prompt", "prompt_text", "language"))
        name = _text(s.get("name"), c.at("name"))
        if name in speakers:
            raise c.at("name").error(f"speaker {name!r} is defined twice")
        if "prompt" not in s:
            raise c.at("prompt").error("missing: the speaker's prompt recording (wav)")
        speakers[name] = Speaker(
            name=name,
            prompt=_prompt_wav(s["prompt"], base, c.at("prompt")),
            language=_language(s.get("language", "en"), c.at("language")),
            prompt_text=_text(s["prompt_text"], c.at("prompt_text")) if "prompt_text" in s else None,
        )
    raw_lines = data.get("lines")
    lctx = root.at("lines")
    if not isinstance(raw_lines, Sequence) or isinstance(raw_lines, str) or not raw_lines:
        raise lctx.error("must be a non-empty list of lines")
    lines = []
    for i, ln in enumerate(raw_lines):
        c = lctx.at(i)
        ln = _mapping(ln, c, LINE_FIELDS)
        who = _text(ln.get("speaker"), c.at("speaker"))
        if who not in speakers:
            raise c.at("speaker").error(f"unknown speaker {who!r} (speakers: {sorted(speakers)})")
        kinds = [k for k in POSE_KINDS if k in ln]
        if len(kinds) != 1:
            raise c.error(f"needs exactly one pose of {list(POSE_KINDS)}, got {kinds or 'none'}")
        kind = kinds[0]
        pctx = c.at(kind)
        kwargs: dict[str, Any] = {}
        if kind == "trajectory":
            kwargs["trajectory"] = _trajectory(ln[kind], pctx)
        elif kind == "pose_file":
            kwargs["pose_file"] = _pose_file(ln[kind], base, pctx)
        elif kind == "pose_text":
            kwargs["pose_text"] = _text(ln[kind], pctx)
        else:
            kwargs["video"] = _video(ln[kind], base, pctx, scene.video)
        duration = _number(ln["duration"], c.at("duration"), positive=True) if "duration" in ln else None
        seed = ln.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise c.at("seed").error(f"must be a non-negative integer, got {seed!r}")
        lines.append(
            Line(
                index=i,
                speaker=who,
                text=_text(ln.get("text"), c.at("text")),
                language=_language(ln["language"], c.at("language")) if "language" in ln else speakers[who].language,
                pause=_number(ln.get("pause", 0.0 if i == 0 else DEFAULT_PAUSE), c.at("pause"), minimum=0.0),
                pose_kind=kind,
                duration=duration,
                seed=seed,
                **kwargs,
            )
        )
    title = data.get("title")
    return DramaScript(
        path=None, speakers=speakers, lines=tuple(lines), scene=scene, title=str(title) if title else None
    )


def load_script(path: Path | str) -> DramaScript:
    """Read and validate a drama script (YAML, or JSON by a .json suffix)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ScriptError(f"{path}: drama script not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScriptError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    script = parse_script(data, str(path), path.parent)
    return DramaScript(path=path, speakers=script.speakers, lines=script.lines, scene=script.scene, title=script.title)


__all__ = [
    "DramaScript",
    "Line",
    "Scene",
    "ScriptError",
    "Speaker",
    "TrajectoryPose",
    "VideoSpan",
    "Waypoint",
    "SUPPORTED_LANGUAGES",
    "POSE_KINDS",
    "load_script",
    "parse_script",
    "video_duration",
]
