"""Text pose prompts from a line's trajectory, in MRSDrama's "[STATIC] ..." / "[DYNAMIC] ..." style.

A prompt states what the geometry says: the direction (one of 8 sectors of 45 degrees around
the listener), the horizontal distance (rounded to half metres), the posture (standing or
sitting) and, for a walk, its start and end sector, the speed class (slow / normal / fast) and
whether the talker comes closer or moves away. Several templates per case; the template is
drawn from the caller's rng, so a seed fixes the prompt.
"""

from __future__ import annotations

import numpy as np

from isdrama.data.synth.geometry import azimuth_cw
from isdrama.data.synth.trajectory import Trajectory

#: The 8 sectors, clockwise from the front, each 45 degrees wide and centred on its direction.
SECTORS = ("front", "front-right", "right", "back-right", "back", "back-left", "left", "front-left")
#: Distance change (m) below which a walk is described as keeping its distance.
SAME_DISTANCE = 0.5

_SPEED_WORDS = {
    "slow": ("slowly", "unhurriedly", "at a slow pace"),
    "normal": ("", "at a normal pace", "steadily"),
    "fast": ("quickly", "briskly", "at a fast pace"),
}

_SPEED_ADJECTIVE = {"slow": "a slow", "normal": "a steady", "fast": "a fast"}

_STATIC = (
    "{posture_ing} {dist} to the {sector}",
    "{posture_s} {dist} away, {sector_side}",
    "the speaker {posture_s} {sector_side}, {dist} from the listener",
    "{sector_of} the listener, {posture_ing} at {dist}",
    "stays {posture_ing} {sector_side}, {dist} away",
)
_DYNAMIC = (
    "walks {speed}from the {sector0} to the {sector1}{change}",
    "moves {speed}from {sector0} to {sector1}{change}",
    "the speaker walks {speed}from {dist0} {sector0_side} to {dist1} {sector1_side}",
    "{speed_adj} walk from the {sector0} ({dist0}) to the {sector1} ({dist1}){change}",
)


def sector(position: np.ndarray) -> str:
    """Name of the 45-degree sector holding a listener-frame position (3,)."""
    az = float(azimuth_cw(np.asarray(position)[None])[0]) % 360.0
    return SECTORS[int(((az + 22.5) % 360.0) // 45.0)]


def distance_phrase(position: np.ndarray) -> str:
    """Horizontal distance from the head rounded to half metres: 'about 2.5 metres'."""
    d = float(np.hypot(position[0], position[1]))
    half = max(round(d * 2) / 2, 0.5)
    if half == 0.5:
        return "half a metre"
    if half == 1.0:
        return "about 1 metre"
    return f"about {half:g} metres"


def _side(name: str) -> str:
    return {"front": "in front", "back": "behind"}.get(name, f"to the {name}")


def _change(traj: Trajectory) -> str:
    d0, d1 = (float(np.hypot(p[0], p[1])) for p in (traj.start, traj.end))
    if d1 < d0 - SAME_DISTANCE:
        return ", coming closer"
    if d1 > d0 + SAME_DISTANCE:
        return ", moving away"
    return ""


def _choose(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _tagged(tag: str, body: str) -> str:
    return f"[{tag}] {body[:1].upper()}{body[1:]}"


def pose_prompt(traj: Trajectory, rng: np.random.Generator) -> str:
    """A text description of the trajectory (see the module docstring)."""
    if not traj.is_dynamic:
        standing = traj.posture == "standing"
        s = sector(traj.start)
        words = {
            "posture_ing": "standing" if standing else "sitting",
            "posture_s": "stands" if standing else "sits",
            "dist": distance_phrase(traj.start),
            "sector": s,
            "sector_side": _side(s),
            "sector_of": {"front": "in front of", "back": "behind"}.get(s, f"{s} of"),
        }
        return _tagged("STATIC", _choose(rng, _STATIC).format(**words))
    speed_class = traj.speed_class or "normal"
    s0, s1 = sector(traj.start), sector(traj.end)
    change = _change(traj)
    if s0 == s1 and change:
        s1 = ("further " if change == ", moving away" else "nearer ") + s1
    speed = _choose(rng, _SPEED_WORDS[speed_class])
    words = {
        "speed": f"{speed} " if speed else "",
        "sector0": s0,
        "sector1": s1,
        "sector0_side": _side(s0),
        "sector1_side": _side(s1),
        "change": change,
        "dist0": distance_phrase(traj.start),
        "dist1": distance_phrase(traj.end),
        "speed_adj": _SPEED_ADJECTIVE[speed_class],
    }
    return _tagged("DYNAMIC", _choose(rng, _DYNAMIC).format(**words))
