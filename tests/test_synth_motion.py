"""Trajectories, rooms and text pose prompts of the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest

from isdrama.data.schema import POSE_FRAME_RATE
from isdrama.data.synth.geometry import quaternion_facing, yaw_facing
from isdrama.data.synth.prompts import SECTORS, pose_prompt, sector
from isdrama.data.synth.room import DEFAULT_ROOMS, RoomPlacement, marks
from isdrama.data.synth.trajectory import (
    MotionConfig,
    SpeakerState,
    Trajectory,
    plan_line,
    pose_frames,
    segment_min_distance,
    static_trajectory,
    walk_trajectory,
)

CFG = MotionConfig()


def test_sectors_follow_the_listener_frame():
    assert sector(np.array([0.0, 2.0, 0.0])) == "front"
    assert sector(np.array([2.0, 0.0, 0.0])) == "right"
    assert sector(np.array([-2.0, 0.0, 0.0])) == "left"
    assert sector(np.array([0.0, -2.0, 0.0])) == "back"
    assert sector(np.array([1.0, 1.0, 0.0])) == "front-right"
    assert sector(np.array([-1.0, -1.0, 0.0])) == "back-left"
    assert {sector(np.array([np.sin(a), np.cos(a), 0.0])) for a in np.linspace(0, 2 * np.pi, 64)} == set(SECTORS)


def test_quaternion_encodes_the_facing_yaw():
    traj = static_trajectory(np.array([1.0, 2.0, 0.4]), 0.7, "standing", 1.0)
    pose = traj.pose(10)
    assert np.allclose(np.linalg.norm(pose[:, 3:7], axis=1), 1.0, atol=1e-6)
    assert np.allclose(quaternion_facing(pose[:, 3:7]), yaw_facing(np.full(10, 0.7)), atol=1e-6)


def test_walk_is_at_constant_speed_and_ends_on_target():
    start, end = np.array([-2.0, 2.0, 0.4]), np.array([2.0, 3.0, 0.4])
    traj = walk_trajectory(start, end, 1.0, 0.5, 6.0, 0.0, "normal", CFG)
    t = np.arange(0, 6.0, 1 / POSE_FRAME_RATE)
    speed = np.linalg.norm(traj.velocity_at(t), axis=1)
    moving = (t > 0.5) & (t < 0.5 + np.linalg.norm(end - start))
    assert np.allclose(speed[moving], 1.0)
    assert np.allclose(speed[t < 0.5], 0.0)
    assert np.allclose(traj.position_at(np.array([6.0]))[0], end)
    assert np.allclose(traj.position_at(np.array([0.5 + 1.0]))[0], start + (end - start) / np.linalg.norm(end - start))
    # after arriving the speaker turns to face the listener
    facing = traj.facing_at(np.array([6.0]))[0]
    assert np.dot(facing[:2], -end[:2]) / np.linalg.norm(end[:2]) > 0.99


def test_pose_frame_count_convention():
    assert pose_frames(48_000) == 188
    assert pose_frames(255) == 1


@pytest.mark.parametrize("room", DEFAULT_ROOMS, ids=lambda r: r.name)
def test_room_marks_inside_walls_and_all_around(room):
    floor = marks(room, CFG.distance_range)
    assert np.all(floor >= room.wall_margin - 1e-9) and np.all(
        floor <= np.array(room.size[:2]) - room.wall_margin + 1e-9
    )
    placement = RoomPlacement(room, 0.3, CFG.listener_ear_height)
    local = placement.to_listener(np.concatenate([floor, np.full((len(floor), 1), 1.6)], axis=1))
    assert np.allclose(placement.to_room(local)[:, :2], floor)
    d = np.linalg.norm(local, axis=1)
    assert np.all((d >= CFG.distance_range[0]) & (d <= CFG.distance_range[1]))
    assert len({sector(p) for p in local}) >= 5


def test_image_sources_mirror_across_walls():
    room = DEFAULT_ROOMS[0]
    placement = RoomPlacement(room, 1.1, CFG.listener_ear_height)
    maps = placement.image_maps(1)
    assert len(maps) == 6
    p = np.array([0.7, 1.9, 0.3])
    for a, b, order in maps:
        image_room = placement.to_room((a @ p + b)[None])[0]
        source_room = placement.to_room(p[None])[0]
        moved = np.flatnonzero(~np.isclose(image_room, source_room))
        assert order == 1 and len(moved) == 1  # mirrored along exactly one axis
        axis = moved[0]
        wall = (image_room[axis] + source_room[axis]) / 2
        assert np.isclose(wall, 0.0) or np.isclose(wall, room.size[axis])


def test_planned_lines_stay_in_range_and_avoid_the_listener():
    room = DEFAULT_ROOMS[1]
    placement = RoomPlacement(room, 0.0, CFG.listener_ear_height)
    floor = marks(room, CFG.distance_range)
    mark_xyz = placement.to_listener(np.concatenate([floor, np.full((len(floor), 1), 1.6)], axis=1))
    walks = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        m = int(rng.integers(len(floor)))
        state = SpeakerState(position=mark_xyz[m], yaw=0.0, posture="standing", mark=m, mouth_height=1.6)
        traj, end_mark = plan_line(rng, state, mark_xyz, {(m + 1) % len(floor)}, 4.0, CFG)
        assert end_mark != (m + 1) % len(floor)
        for a, b in zip(traj.positions[:-1], traj.positions[1:]):
            assert segment_min_distance(a, b) >= CFG.distance_range[0] - 1e-9
        assert np.all(np.linalg.norm(traj.positions, axis=1) <= CFG.distance_range[1] + 1e-9)
        if traj.is_dynamic:
            walks += 1
            assert traj.times[-1] == pytest.approx(4.0)
            assert np.linalg.norm(traj.end - traj.start) >= CFG.min_walk - 1e-9
    assert 10 < walks < 50


def test_prompts_describe_the_trajectory():
    rng = np.random.default_rng(0)
    left_sitting = static_trajectory(np.array([-2.0, 0.1, -0.1]), 0.0, "sitting", 2.0)
    texts = {pose_prompt(left_sitting, rng) for _ in range(20)}
    assert len(texts) >= 3  # varied templates
    for text in texts:
        assert text.startswith("[STATIC] ") and "left" in text.lower() and "2 metres" in text
        assert "sit" in text.lower()
    walk = walk_trajectory(np.array([-3.0, 3.0, 0.4]), np.array([1.5, 0.2, 0.4]), 0.5, 0.2, 12.0, 0.0, "slow", CFG)
    for _ in range(10):
        text = pose_prompt(walk, rng)
        assert text.startswith("[DYNAMIC] ")
        assert "front-left" in text.lower() and "right" in text
        assert any(w in text.lower() for w in ("slow", "unhurried")) or "closer" in text or "(about" in text
    again = [pose_prompt(walk, np.random.default_rng(5)) for _ in range(2)]
    assert again[0] == again[1]


def test_trajectory_rejects_bad_knots():
    with pytest.raises(ValueError, match="increase"):
        Trajectory(times=np.array([0.0, 0.0]), positions=np.zeros((2, 3)), yaws=np.zeros(2), posture="standing")
    with pytest.raises(ValueError, match="posture"):
        Trajectory(times=np.array([0.0, 1.0]), positions=np.zeros((2, 3)), yaws=np.zeros(2), posture="lying")
