"""Synthetic video drawing: who is talking is visible (isdrama.data.synth.video)."""

from __future__ import annotations

import dataclasses

import numpy as np

from isdrama.data.synth.video import Camera, FigureTrack, VideoConfig, iter_frames


def _frames(talking, cfg=VideoConfig()):
    track = FigureTrack(
        identity=0,
        positions=np.tile([[-1.5, 2.0, 0.3]], (2, 1)),
        yaws=np.zeros(2),
        mouth=np.zeros(2),
        talking=np.array(talking),
    )
    return list(iter_frames([track], 2, -1.4, cfg)), track


def _white_ring_pixels(img, track, cfg):
    """White pixels in an annulus just outside the head."""
    cam = Camera(cfg)
    head = track.positions[0] + np.array([0.0, 0.0, cfg.head_above_mouth])
    px, depth = cam.project(head[None])
    r_head = cam.scale(cfg.head_radius, depth[0])
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    d = np.hypot(xx - px[0, 0], yy - px[0, 1])
    annulus = (d > r_head + 1) & (d < r_head + max(cam.scale(cfg.talk_ring, depth[0]), 2))
    return int((img[annulus].min(axis=1) > 200).sum()), int(annulus.sum())


def test_ring_marks_the_talking_frames_only():
    cfg = VideoConfig()
    (talk, silent), track = _frames([True, False], cfg)
    white_talk, n = _white_ring_pixels(talk, track, cfg)
    white_silent, _ = _white_ring_pixels(silent, track, cfg)
    assert white_talk > 0.5 * n and white_silent == 0
    # mouth closed in both frames: the ring does not depend on the speech envelope
    off = dataclasses.replace(cfg, talk_ring=0.0)
    (talk_off, _), _ = _frames([True, False], off)
    assert _white_ring_pixels(talk_off, track, off)[0] == 0
