"""Pose resampling, geometric features and the Multimodal Pose Encoder (tiny random models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_configs import model_config

from isdrama.data.resample import resample_linear, resample_pose
from isdrama.data.schema import POSE_FRAME_RATE
from isdrama.models.pose_encoder import MultimodalPoseEncoder, PoseEncoderConfig
from isdrama.models.pose_features import GeometricFeatures

T5_TINY = dict(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)


def tiny_config(**kw) -> PoseEncoderConfig:
    """configs/model/pose_encoder (tiny) with smaller explicit sizes, frozen backbones, pooled frames."""
    base = dict(
        d_model=32,
        content_dim=24,
        proj_dim=16,
        dropout=0.0,
        chunk_frames=10,
        geo_blocks=1,
        xattn_layers=1,
        xattn_heads=2,
        xattn_ff_mult=2.0,
        video_backbone="test_resnet",
        video_pretrained=False,
        video_image_size=32,
        video_grid=None,
        text_model="unused",
        text_model_config=T5_TINY,
        text_tokenizer="byt5",
        text_freeze=True,
    )
    return PoseEncoderConfig(**model_config("pose_encoder", **{**base, **kw}))


def tiny_encoder(seed: int = 0, **kw) -> MultimodalPoseEncoder:
    torch.manual_seed(seed)
    return MultimodalPoseEncoder(tiny_config(**kw)).eval()


def _quat(angle: float, axis=(0.0, 0.0, 1.0)) -> np.ndarray:
    ax = np.asarray(axis) / np.linalg.norm(axis)
    return np.array([math.cos(angle / 2), *(math.sin(angle / 2) * ax)])


def _inputs(T=(40, 23), F=(3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    B, Tm, Fm = len(T), max(T), max(F)
    frame_mask = torch.arange(Tm)[None] < torch.tensor(T)[:, None]
    pose = torch.randn(B, Tm, 9, generator=g)
    return dict(
        frame_mask=frame_mask,
        z_c=torch.randn(B, Tm, 24, generator=g),
        pose=pose,
        video=torch.randint(0, 256, (B, Fm, 3, 40, 40), generator=g, dtype=torch.uint8),
        video_mask=torch.arange(Fm)[None] < torch.tensor(F)[:, None],
        prompts=["[DYNAMIC] walks from left to right", "[STATIC] sits in front"],
    )


# ------------------------------------------------------------------------------ resampling
def test_resample_pose_keeps_linear_trajectories_and_unit_quaternions():
    n = 375  # 2 s at 187.5 frames/s
    t = np.arange(n) / POSE_FRAME_RATE
    pose = np.zeros((n, 9))
    pose[:, 0], pose[:, 1], pose[:, 2] = -2 + 1.5 * t, 1.0 - 0.5 * t, 0.1 * t
    pose[:, 3:7] = np.stack([_quat(a) for a in 0.8 * t])  # constant-rate yaw
    pose[:, 7], pose[:, 8] = 0.3 * t, -0.2 + t
    out = resample_pose(pose, POSE_FRAME_RATE, 75.0)
    assert isinstance(out, np.ndarray) and out.shape == (150, 9)
    td = np.arange(150) / 75.0
    np.testing.assert_allclose(out[:, 0], -2 + 1.5 * td, atol=1e-9)
    np.testing.assert_allclose(out[:, 1], 1.0 - 0.5 * td, atol=1e-9)
    np.testing.assert_allclose(out[:, 8], -0.2 + td, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(out[:, 3:7], axis=1), 1.0, atol=1e-9)
    # nlerp between close samples of a constant-rate rotation stays on it (tiny angle error)
    yaw = 2 * np.arctan2(out[:, 6], out[:, 3])
    np.testing.assert_allclose(yaw, 0.8 * td, atol=1e-5)
    # torch in -> torch out, exact length on request
    out_t = resample_pose(torch.tensor(pose, dtype=torch.float32), POSE_FRAME_RATE, 75.0, n_frames=151)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (151, 9)
    assert out_t.dtype == torch.float32


def test_resample_pose_quaternion_hemisphere_and_errors():
    q0, q1 = _quat(0.0), -_quat(0.4)  # q1 written in the opposite hemisphere
    pose = np.zeros((2, 9))
    pose[0, 3:7], pose[1, 3:7] = q0, q1
    out = resample_pose(pose, 1.0, 2.0, n_frames=3)  # times 0, 0.5, 1 source frames
    mid = out[1, 3:7]
    np.testing.assert_allclose(np.linalg.norm(mid), 1.0, atol=1e-12)
    expected = (q0 - q1) / np.linalg.norm(q0 - q1)  # shorter arc: about 0.2 rad yaw
    np.testing.assert_allclose(mid, expected, atol=1e-12)
    with pytest.raises(ValueError, match="columns"):
        resample_pose(np.zeros((4, 7)), 187.5, 75.0)
    lin = resample_linear(np.arange(10.0)[:, None], 10.0, 5.0)
    np.testing.assert_allclose(lin[:, 0], [0, 2, 4, 6, 8])


# ------------------------------------------------------------------------ geometric features
def test_geometric_features_are_ear_relative_and_scaled():
    pose = torch.tensor([[1.0, 2.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.5, -0.5]])
    f = GeometricFeatures(position_scale=2.0, velocity_scale=0.5)(pose)[0]
    assert f.shape == (14,)
    torch.testing.assert_close(f[0:3], torch.tensor([1.11, 2.0, 0.0]) / 2)  # mouth - left ear
    torch.testing.assert_close(f[3:6], torch.tensor([0.89, 2.0, 0.0]) / 2)  # mouth - right ear
    torch.testing.assert_close(f[6:10], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # sign fixed
    torch.testing.assert_close(f[10:12], torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(f[12], torch.tensor(math.hypot(1.11, 2.0) / 2))
    assert GeometricFeatures(include_distance=False).dim == 12


# -------------------------------------------------------------------------------- encoder
def test_all_branches_shapes_and_outputs():
    enc = tiny_encoder()
    x = _inputs()
    out = enc(**x)
    B, T = x["frame_mask"].shape
    assert set(out["z_p"]) == {"geo", "video", "text"}
    for b, z in out["z_p"].items():
        assert z.shape == (B, T, 32)
        assert z[~x["frame_mask"]].abs().sum() == 0
        assert out["pooled"][b].shape == (B, 16)
        assert out["chunks"][b].shape == (B, 4, 16)
    assert out["chunk_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert out["fused"].shape == (B, T, 32)
    torch.testing.assert_close(out["fused"], sum(out["z_p"].values()) / 3)


def test_padding_does_not_change_valid_frames():
    enc = tiny_encoder()
    x = _inputs()
    out = enc(**x)
    y = dict(x)
    fm, vm = x["frame_mask"], x["video_mask"]
    y["pose"] = x["pose"].masked_fill(~fm[..., None], 123.0)
    y["z_c"] = x["z_c"].masked_fill(~fm[..., None], -55.0)
    y["video"] = x["video"].clone()
    y["video"][~vm] = 7
    out2 = enc(**y)
    for b in out["z_p"]:
        torch.testing.assert_close(out["z_p"][b][fm], out2["z_p"][b][fm], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["pooled"][b], out2["pooled"][b], atol=1e-5, rtol=1e-5)
    # the short line alone equals its row of the padded batch
    t, f = int(fm[1].sum()), int(vm[1].sum())
    alone = enc(
        frame_mask=fm[1:, :t],
        z_c=x["z_c"][1:, :t],
        pose=x["pose"][1:, :t],
        video=x["video"][1:, :f],
        video_mask=vm[1:, :f],
        prompts=x["prompts"][1:],
    )
    for b in out["z_p"]:
        torch.testing.assert_close(alone["z_p"][b][0], out["z_p"][b][1, :t], atol=1e-5, rtol=1e-5)


def test_missing_prompt_rows_and_text_padding():
    enc = tiny_encoder()
    x = _inputs()
    out = enc(frame_mask=x["frame_mask"], z_c=x["z_c"], prompts=[x["prompts"][0], None])
    assert out["present"]["text"].tolist() == [True, False]
    feats, mask = enc.encode_prompts(["short", "a much longer pose prompt"])
    assert mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]
    noisy = feats.clone()
    noisy[~mask] = 9.0
    a = enc(frame_mask=x["frame_mask"], z_c=x["z_c"], text_features=feats, text_mask=mask)
    b = enc(frame_mask=x["frame_mask"], z_c=x["z_c"], text_features=noisy, text_mask=mask)
    torch.testing.assert_close(a["z_p"]["text"], b["z_p"]["text"])
    # a row without any valid text token ignores whatever its feature slots hold
    mask[1] = False
    noisy[1] = -4.0
    a = enc(frame_mask=x["frame_mask"], z_c=x["z_c"], text_features=feats, text_mask=mask)
    b = enc(frame_mask=x["frame_mask"], z_c=x["z_c"], text_features=noisy, text_mask=mask)
    torch.testing.assert_close(a["z_p"]["text"], b["z_p"]["text"])
    assert a["present"]["text"].tolist() == [True, False]


def test_cached_features_give_the_same_result():
    enc = tiny_encoder()
    x = _inputs()
    ref = enc(**x)
    vf = enc.encode_video_frames(x["video"], x["video_mask"])
    assert vf.shape == (2, 3, enc.video_encoder.dim) and vf[1, 2].abs().sum() == 0
    tf, tm = enc.encode_prompts(x["prompts"])
    out = enc(
        frame_mask=x["frame_mask"],
        z_c=x["z_c"],
        pose=x["pose"],
        video_features=vf,
        video_mask=x["video_mask"],
        text_features=tf,
        text_mask=tm,
    )
    for b in ref["z_p"]:
        torch.testing.assert_close(out["z_p"][b], ref["z_p"][b])
    # frame times matter: the same frames placed later give another result
    late = enc(
        frame_mask=x["frame_mask"],
        z_c=x["z_c"],
        video_features=vf,
        video_mask=x["video_mask"],
        video_times=torch.full((2, 3), 0.25) + 0.1,
    )
    assert not torch.allclose(late["z_p"]["video"], ref["z_p"]["video"])


def test_subset_of_branches_and_clear_errors():
    enc = tiny_encoder(branches=("geo",))
    assert not hasattr(enc, "video_encoder") and not hasattr(enc, "text_encoder")
    x = _inputs()
    out = enc(frame_mask=x["frame_mask"], pose=x["pose"])
    assert set(out["z_p"]) == {"geo"}
    with pytest.raises(ValueError, match="not enabled"):
        enc(frame_mask=x["frame_mask"], pose=x["pose"], prompts=x["prompts"])
    full = tiny_encoder()
    with pytest.raises(ValueError, match="z_c"):
        full(frame_mask=x["frame_mask"], prompts=x["prompts"])
    with pytest.raises(ValueError, match="no pose prompt"):
        full(frame_mask=x["frame_mask"], z_c=x["z_c"])
    with pytest.raises(ValueError, match="resample"):
        full(frame_mask=x["frame_mask"], pose=x["pose"][:, :-1])
    with pytest.raises(ValueError, match="branches"):
        tiny_config(branches=("geo", "audio"))
    only_video = full(
        frame_mask=x["frame_mask"], z_c=x["z_c"], video=x["video"], video_mask=x["video_mask"], with_chunks=False
    )
    assert set(only_video["z_p"]) == {"video"} and "chunks" not in only_video


def test_state_dict_round_trip_and_gradients(tmp_path):
    enc = tiny_encoder(seed=0)
    x = _inputs()
    ref = enc(**x)
    torch.save(enc.state_dict(), tmp_path / "mpe.pt")
    other = tiny_encoder(seed=1)
    assert not torch.allclose(other(**x)["z_p"]["geo"], ref["z_p"]["geo"])
    other.load_state_dict(torch.load(tmp_path / "mpe.pt"))
    out = other(**x)
    for b in ref["z_p"]:
        assert torch.equal(out["z_p"][b], ref["z_p"][b])

    enc.train()
    out = enc(**x)
    sum(v.sum() for v in out["pooled"].values()).backward()
    assert all(p.grad is None for p in enc.video_encoder.model.parameters())  # frozen
    assert all(p.grad is None for p in enc.text_encoder.model.parameters())
    assert not enc.video_encoder.model.training and not enc.text_encoder.model.training
    for name in ("geo", "video", "text"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.branch_modules[name].parameters()), name


def test_text_encoder_loads_from_a_local_folder(tmp_path):
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    folder = tmp_path / "tiny-t5"
    torch.manual_seed(0)
    T5EncoderModel(T5Config(**T5_TINY)).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    enc = tiny_encoder(branches=("text",), text_model=str(folder), text_model_config=None, text_tokenizer=None)
    x = _inputs()
    out = enc(frame_mask=x["frame_mask"], z_c=x["z_c"], prompts=x["prompts"])
    assert out["z_p"]["text"].shape == (2, 40, 32)
    with pytest.raises(OSError, match="text_model"):
        tiny_encoder(
            branches=("text",), text_model=str(tmp_path / "missing"), text_model_config=None, text_tokenizer="byt5"
        )


def test_video_grid_features_keep_the_screen_position():
    from isdrama.models.pose_encoder import VideoFrameEncoder

    torch.manual_seed(0)
    grid = VideoFrameEncoder("test_resnet", pretrained=False, image_size=64, grid=2).eval()
    pooled = VideoFrameEncoder("test_resnet", pretrained=False, image_size=64).eval()
    pooled.model.load_state_dict(grid.model.state_dict())
    assert grid.dim == 4 * pooled.dim
    frames = torch.zeros(1, 2, 3, 64, 64, dtype=torch.uint8)
    frames[0, 0, :, 20:44, 2:26] = 255  # a white square on the left ...
    frames[0, 1, :, 20:44, 38:62] = 255  # ... and on the right
    g, p = grid(frames), pooled(frames)
    # the grid cells average back to the pooled embedding (the 2 x 2 map divides evenly)
    torch.testing.assert_close(g.view(1, 2, -1, 2, 2).mean((-1, -2)), p)
    # the left and right columns of the grid swap between the two frames
    cells = g.view(2, -1, 2, 2)
    left_col, right_col = cells[..., 0].abs().sum(), cells[..., 1].abs().sum()
    assert left_col > 0 and right_col > 0
    diff_grid = (cells[0] - cells[1]).norm() / cells.norm()
    diff_pool = (p[0, 0] - p[0, 1]).norm() / p.norm()
    assert diff_grid > 2 * diff_pool
    vit = VideoFrameEncoder("test_vit", pretrained=False, grid=2)
    assert vit(frames).shape == (1, 2, 4 * vit.model.num_features)
    with pytest.raises(ValueError, match="video_grid"):
        VideoFrameEncoder("test_resnet", pretrained=False, grid=0)
