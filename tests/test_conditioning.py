"""The conditioning front end: tensors in, shapes out; feature caches; loading a pose-pretrain
checkpoint (new and old state-dict names) and refusing other files."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from model_configs import model_config, pose_pretrain_kwargs

from isdrama.lit.pose_pretrain import PosePretrainModule
from isdrama.models.conditioning import ConditioningFrontEnd, FrontEndConfig
from isdrama.utils.config import build_config

#: smaller explicit sizes on top of the tiny configs
CONTENT = dict(d_model=24, n_layers=1, n_heads=2, dp_channels=16)
POSE = dict(d_model=32, proj_dim=16, chunk_frames=10, xattn_layers=1, xattn_heads=2, video_image_size=32)
FRAMES = (40, 23)


def frontend_config(**pose) -> FrontEndConfig:
    values = {
        "content": model_config("content", **CONTENT),
        "pose_encoder": model_config("pose_encoder", content_dim=24, **{**POSE, **pose}),
        "feature_cache": True,
        "video_feature_norm": True,
    }
    return build_config(FrontEndConfig, values, "model")


def make_frontend(seed: int = 0, **pose) -> ConditioningFrontEnd:
    torch.manual_seed(seed)
    return ConditioningFrontEnd(frontend_config(**pose)).eval()


def inputs(seed: int = 0) -> dict:
    """Two lines of 40 / 23 frames: 5 / 3 tokens whose durations add up, pose, 3 / 2 video
    frames, one prompt."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(FRAMES), max(FRAMES)
    durations = torch.tensor([[8, 8, 8, 8, 8], [10, 7, 6, 0, 0]])
    return dict(
        tokens=torch.randint(3, 40, (B, 5), generator=g),
        token_mask=durations > 0,
        frame_mask=torch.arange(T)[None] < torch.tensor(FRAMES)[:, None],
        durations=durations,
        pose=torch.randn(B, T, 9, generator=g),
        video=torch.randint(0, 256, (B, 3, 3, 32, 32), generator=g, dtype=torch.uint8),
        video_mask=torch.tensor([[True, True, True], [True, True, False]]),
        prompts=["[DYNAMIC] walks from left to right", None],
        keys=["d/a", "d/b"],
    )


def test_tensors_in_shapes_out():
    fe = make_frontend()
    x = inputs()
    with torch.no_grad():
        out = fe(**x)
    B, T = 2, max(FRAMES)
    assert out["z_c"].shape == (B, T, 24)
    assert set(out["z_p"]) == {"geo", "video", "text"}
    for b in out["z_p"]:
        assert out["z_p"][b].shape == (B, T, 32) and out["pooled"][b].shape == (B, 16)
        assert out["chunks"][b].shape == (B, 4, 16)
    assert out["present"]["text"].tolist() == [True, False]
    assert out["fused"].shape == (B, T, 32) and out["chunk_mask"].shape == (B, 4)
    assert out["duration_loss"].dim() == 0 and torch.equal(out["durations"], x["durations"])
    assert out["log_duration"].shape == (B, 5)
    assert fe.video_norm is not None and fe.video_norm.is_fitted  # fitted from the first batch
    # inference: durations predicted, each line exactly its frame count
    with torch.no_grad():
        pred = fe(**{**x, "durations": None}, with_chunks=False)
    assert pred["durations"].sum(1).tolist() == list(FRAMES) and "duration_loss" not in pred
    assert "chunks" not in pred
    with pytest.raises(ValueError, match=r"do not add up.*d/b"):
        fe(**{**x, "durations": x["durations"] + torch.tensor([[0], [1]]) * x["token_mask"]})


def test_disabled_branch_inputs_are_ignored_and_caches_fill():
    fe = make_frontend(branches=["geo", "text"])
    x = inputs()
    with torch.no_grad():
        out = fe(**x)
    assert set(out["z_p"]) == {"geo", "text"} and fe.video_norm is None
    full = make_frontend()
    with torch.no_grad():
        first = full(**x)
        assert set(full._video_cache) == {"d/a", "d/b"}
        torch.testing.assert_close(full(**x)["pooled"]["video"], first["pooled"]["video"])
        uncached = full.pose_encoder.encode_video_frames(x["video"], x["video_mask"])
    torch.testing.assert_close(full.raw_video_features(x["video"], x["video_mask"], x["keys"]), uncached)
    full.load_state_dict(full.state_dict())
    assert not full._video_cache  # loading weights drops cached features


def _checkpoint(module: PosePretrainModule, flat: bool = False) -> dict:
    """What Lightning writes (the parts a model load reads); ``flat``: the state-dict names of
    checkpoints written before the front end existed."""
    state = module.state_dict()
    if flat:
        state = {k.removeprefix("frontend."): v for k, v in state.items()}
    return {"state_dict": state, "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": pl.__version__}


@pytest.mark.parametrize("flat", [False, True], ids=["frontend-keys", "old-flat-keys"])
def test_from_pretrained_round_trip(tmp_path, flat):
    torch.manual_seed(0)
    kwargs = pose_pretrain_kwargs()
    kwargs["content"].update(CONTENT)
    kwargs["pose_encoder"].update(content_dim=24, **POSE)
    module = PosePretrainModule(**kwargs).eval()
    x = inputs()
    with torch.no_grad():
        ref = module.frontend(**x)  # fits the video standardiser: its buffers travel too
    path = tmp_path / "pose.ckpt"
    torch.save(_checkpoint(module, flat), path)
    loaded = ConditioningFrontEnd.from_pretrained(path)
    assert not loaded.training and loaded.video_norm.is_fitted
    assert loaded.content.vocab == module.frontend.content.vocab
    lit = PosePretrainModule.load_from_checkpoint(str(path), map_location="cpu").eval()
    with torch.no_grad():
        for other in (loaded, lit.frontend):
            out = other(**x)
            for b in ref["pooled"]:
                assert torch.equal(out["pooled"][b], ref["pooled"][b]), b
            assert torch.equal(out["z_c"], ref["z_c"])


def test_from_pretrained_refuses_other_files(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match=r"weights\.pt: not a Lightning checkpoint \(no 'hyper_parameters'\)"):
        ConditioningFrontEnd.from_pretrained(plain)
    other = tmp_path / "other_stage.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(2)}, "hyper_parameters": {"lr": 1.0}}, other)
    with pytest.raises(
        ValueError,
        match=r"other_stage\.ckpt: not a pose-pretrain checkpoint: "
        r"hyper_parameters lack \['content', 'pose_encoder'",
    ):
        ConditioningFrontEnd.from_pretrained(other)
    hp = {
        "content": model_config("content"),
        "pose_encoder": model_config("pose_encoder"),
        "feature_cache": True,
        "video_feature_norm": True,
    }
    no_weights = tmp_path / "no_weights.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(2)}, "hyper_parameters": hp}, no_weights)
    with pytest.raises(ValueError, match=r"no_weights\.ckpt: .*no 'frontend\.\*' entries"):
        ConditioningFrontEnd.from_pretrained(no_weights)
