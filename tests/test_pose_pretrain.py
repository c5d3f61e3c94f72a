"""Pose pre-training stage: the real Hydra configs end to end (debug=fast, W&B offline, checkpoint
round trip), the loss on a fixed batch, probe labels, probes and retrieval against independent
computations, and the warm-up schedule."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from test_configs import compose_train

from isdrama.lit.conditioning import frontend_inputs
from isdrama.lit.optim import AdamConfig, configure_adam, lr_factor
from isdrama.lit.pose_pretrain import PosePretrainModule
from isdrama.lit.probes import (
    LabelConfig,
    ProbeConfig,
    fit_logistic,
    grouped_retrieval,
    pose_labels,
    predict_logistic,
    probe_accuracy,
    retrieval_groups,
)
from isdrama.models.conditioning import ConditioningFrontEnd
from isdrama.models.contrastive import retrieval_recall


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """5 small synthetic dramas (2 speakers, 2-3 lines, 64 x 64 video) from the real generator."""
    from isdrama.data.synth.generator import SynthConfig, synthesize_dataset

    root = tmp_path_factory.mktemp("synth_pose")
    base = SynthConfig()
    cfg = SynthConfig(
        n_dramas=5,
        seed=3,
        lines_per_drama=(2, 3),
        speakers_per_drama=(2, 2),
        video_config=dataclasses.replace(base.video_config, width=64, height=64),
    )
    synthesize_dataset(root, cfg, num_workers=1, progress=False)
    return root


def compose_cfg(root: Path, out: Path, *overrides: str) -> DictConfig:
    """The real train.yaml + experiment=demo, pointed at ``root``, writing into ``out``."""
    GlobalHydra.instance().clear()
    return compose_train(
        [
            "experiment=demo",
            f"data.root={root}",
            "data.synth=null",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "data.train.max_frames=2000",
            "data.val.max_frames=2000",
            "trainer.enable_progress_bar=false",
            *overrides,
        ],
        out,
    )


@pytest.fixture(scope="module")
def setup(synth_root, tmp_path_factory):
    """(cfg, datamodule, a fixed train batch) from the composed demo config."""
    cfg = compose_cfg(synth_root, tmp_path_factory.mktemp("out"), "logger=none")
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    return cfg, dm, batch


# ------------------------------------------------------------------------------ end to end
def test_debug_fast_run_logs_retrieval_and_probes(synth_root, tmp_path):
    from isdrama.training import run_training

    cfg = compose_cfg(synth_root, tmp_path, "debug=fast")
    assert cfg.model.pose_encoder.frame_rate == cfg.codec.frame_rate == cfg.model.content.frame_rate
    assert cfg.data["items"].load_tokens is False and cfg.data["items"].load_video is True
    metrics = run_training(cfg)
    assert math.isfinite(metrics["train/loss_step"])
    for pair in ("geo-video", "geo-text", "video-text"):
        for k in (1, 5):
            assert 0.0 <= metrics[f"val/retrieval/{pair}/R@{k}"] <= 1.0
    for branch in ("geo", "video", "text"):
        for task in ("left_right", "front_back", "moving", "distance"):
            value = metrics[f"val/probe/{branch}/{task}"]
            assert math.isnan(value) or 0.0 <= value <= 1.0
    assert metrics["val/duration"] > 0
    # the run records the drama split it used, equal to the dataset's split file
    from isdrama.data.splits import load_splits

    assert load_splits(tmp_path).assignment == load_splits(synth_root).assignment


def test_wandb_offline_run_and_checkpoint_round_trip(synth_root, tmp_path, monkeypatch):
    from isdrama.training import build_trainer, instantiate_group

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(
        synth_root,
        tmp_path,
        "logger=wandb",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "trainer.check_val_every_n_epoch=1",
    )
    with open_dict(cfg):  # a second logger at the same time: every logger gets the metrics
        cfg.logger.csv = {
            "_target_": "pytorch_lightning.loggers.csv_logs.CSVLogger",
            "save_dir": str(tmp_path),
            "name": "csv",
        }
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    model = instantiate(cfg.model, _recursive_=False)
    loggers = instantiate_group(cfg.logger)
    trainer = build_trainer(cfg, instantiate_group(cfg.callbacks), loggers)
    import wandb

    try:
        trainer.fit(model, datamodule=dm)
    finally:  # a run left open would be reused by the next WandbLogger of this process
        wandb.finish()
    assert "val/retrieval/geo-video/R@1" in trainer.callback_metrics
    assert list(tmp_path.rglob("offline-run-*")), "no offline W&B run was written"
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert any(r.get("val/retrieval/geo-text/R@5") for r in rows) and any(r.get("val/probe/text/moving") for r in rows)
    assert any(r.get("train/loss_epoch") for r in rows)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    loaded = PosePretrainModule.load_from_checkpoint(str(ckpt), map_location="cpu").eval()
    model.eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    assert set(a["pooled"]) == set(b["pooled"]) == {"geo", "video", "text"}
    for branch in a["pooled"]:
        torch.testing.assert_close(a["pooled"][branch], b["pooled"][branch])
    assert loaded.frontend.content.vocab == model.frontend.content.vocab
    frontend = ConditioningFrontEnd.from_pretrained(ckpt)  # what a later stage loads
    with torch.no_grad():
        c = frontend(**frontend_inputs(batch))
    for branch in a["pooled"]:
        torch.testing.assert_close(c["pooled"][branch], a["pooled"][branch])
    other = instantiate(cfg.model, _recursive_=False).eval()  # fresh weights differ: the test can fail
    with torch.no_grad():
        assert not torch.allclose(other(batch)["pooled"]["geo"], a["pooled"]["geo"])


def test_loss_falls_on_a_fixed_batch(setup):
    cfg, _, batch = setup
    torch.manual_seed(0)
    model = instantiate(cfg.model, _recursive_=False).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(12):
        losses = model.losses(batch, model(batch))
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert {"contrastive/pair/geo-video", "contrastive/pair/geo-text"} <= set(history[0])
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], [h["loss"] for h in history]
    assert history[-1]["contrastive"] < history[0]["contrastive"]
    assert history[-1]["duration"] < history[0]["duration"]


def test_subset_of_branches_and_total_loss(setup):
    cfg, _, batch = setup
    with open_dict(cfg):
        cfg.model.pose_encoder.branches = ["geo", "text"]
    model = instantiate(cfg.model, _recursive_=False).eval()
    with torch.no_grad():
        out = model(batch)
        losses = model.losses(batch, out)
    assert set(out["pooled"]) == {"geo", "text"}
    assert {k for k in losses if k.startswith("contrastive/pair/")} == {"contrastive/pair/geo-text"}
    expected = losses["contrastive"] + cfg.model.duration_weight * losses["duration"]
    torch.testing.assert_close(losses["loss"], expected)


def test_hard_negatives_and_false_negatives(setup):
    cfg, _, batch = setup
    model = instantiate(cfg.model, _recursive_=False)
    valid = model.valid_negatives(batch)
    B = len(batch)
    assert valid.shape == (B, B) and not valid.diagonal().any()  # a line is never its own negative
    # an exact duplicate trajectory is no negative; a far one is
    pose = batch.pose.clone()
    pose[1, :, :3] = pose[0, :, :3]
    pose[2, :, :3] = pose[0, :, :3] + 5.0
    dup = dataclasses.replace(batch, pose=pose, frames=batch.frames.clone())
    dup.frames[1] = dup.frames[0] = dup.frames[2] = min(
        int(batch.frames[0]), int(batch.frames[1]), int(batch.frames[2])
    )
    v = model.valid_negatives(dup)
    assert not v[0, 1] and not v[1, 0] and v[0, 2]


# ------------------------------------------------------------------------------ labels
def _line(xyz_start, xyz_end, frames=50) -> torch.Tensor:
    t = torch.linspace(0, 1, frames)[:, None]
    pose = torch.zeros(frames, 9)
    pose[:, :3] = torch.tensor(xyz_start) * (1 - t) + torch.tensor(xyz_end) * t
    pose[:, 3] = 1.0
    return pose


def test_pose_labels_by_hand():
    lines = [
        _line([-2.0, 1.0, 0.0], [-2.0, 1.0, 0.0]),  # left, front, static, 2.24 m
        _line([0.2, 2.0, 0.0], [0.2, 2.0, 0.0]),  # ahead: left/right undefined, 2.01 m
        _line([1.0, -1.0, 0.0], [1.0, -0.2, 0.0]),  # right, back, moving 0.8 m, ~1.2 m
        _line([3.0, 0.1, 0.3], [3.4, 0.1, 0.3]),  # right, front/back undefined, 0.4 m: static
        _line([5.0, 5.0, 0.0], [5.0, 5.0, 0.0]),
    ]  # 7.07 m
    pose = torch.stack(lines)
    mask = torch.ones(5, 50, dtype=torch.bool)
    mask[4, 10:] = False
    pose[4, 10:] = 100.0  # padding must not count
    lab = pose_labels(pose, mask, LabelConfig())
    assert lab["left_right"].tolist() == [0, -1, 1, 1, 1]
    assert lab["left_right_all"].tolist() == [0, 1, 1, 1, 1]
    assert lab["front_back"].tolist() == [1, 1, 0, -1, 1]
    assert lab["front_back_all"].tolist() == [1, 1, 0, 1, 1]
    assert lab["moving"].tolist() == [0, 0, 1, 0, 0]
    assert lab["distance"].tolist() == [1, 1, 0, 2, 2]
    assert pose_labels(pose, mask, LabelConfig(moving_path_m=0.3))["moving"].tolist() == [0, 0, 1, 1, 0]
    with pytest.raises(ValueError, match="distance_edges_m"):
        LabelConfig(distance_edges_m=(3.0, 1.0))


# ------------------------------------------------------------------------------ probes
def test_probe_matches_sklearn_logistic_regression():
    sk = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    n, d, k = 300, 6, 3
    centres = torch.randn(k, d, generator=g) * 1.2
    y = torch.randint(0, k, (n,), generator=g)
    x = centres[y] + torch.randn(n, d, generator=g)
    cfg = ProbeConfig(l2=1e-2, max_iter=500, normalize=False)
    params = fit_logistic(x[:200], y[:200], k, cfg)
    ours = predict_logistic(params, x[200:])
    # the same objective: mean CE + l2 |W|^2 on standardised inputs == C * sum CE + |W|^2 / 2
    mean, std = x[:200].mean(0), x[:200].std(0, unbiased=False)
    clf = sk.LogisticRegression(C=1.0 / (2 * cfg.l2 * 200), max_iter=5000, tol=1e-10)
    clf.fit(((x[:200] - mean) / std).double().numpy(), y[:200].numpy())
    theirs = torch.from_numpy(clf.predict(((x[200:] - mean) / std).double().numpy()))
    assert (ours == theirs).float().mean() >= 0.99
    np.testing.assert_allclose(
        params["weight"].numpy().T - params["weight"].numpy().T.mean(0), clf.coef_ - clf.coef_.mean(0), atol=2e-3
    )
    acc = probe_accuracy(x[:200], y[:200], x[200:], y[200:], k, cfg)
    assert acc == pytest.approx(float((theirs == y[200:]).double().mean()), abs=0.011)


def test_probe_accuracy_by_hand():
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [0.0]])
    y = torch.tensor([0, 0, 1, 1, -1])  # the -1 row is left out
    assert (
        probe_accuracy(
            x, y, torch.tensor([[-3.0], [3.0], [5.0]]), torch.tensor([0, 1, -1]), 2, ProbeConfig(normalize=False)
        )
        == 1.0
    )
    assert (
        probe_accuracy(x, y, torch.tensor([[-3.0], [3.0]]), torch.tensor([1, 0]), 2, ProbeConfig(normalize=False))
        == 0.0
    )
    assert probe_accuracy(x, torch.tensor([1, 1, 1, 1, 1]), x[:2], torch.tensor([1, 0]), 2) == 0.5
    assert math.isnan(probe_accuracy(x, y, x, torch.full((5,), -1), 2))


# ------------------------------------------------------------------------------ retrieval
def _brute_recall(a: np.ndarray, b: np.ndarray, groups, k: int) -> float:
    """Independent ranking: a python loop over cosine similarities."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    hits, n = 0, 0
    for cand, scored in groups:
        for i in scored:
            sims = {int(j): float(a[i] @ b[j]) for j in cand}
            better = sum(1 for j, s in sims.items() if j != i and s > sims[int(i)])
            hits += better < k
            n += 1
    return hits / n


def test_retrieval_groups_cover_every_row_once_with_full_groups():
    groups = retrieval_groups(70, 32, seed=1)
    scored = np.concatenate([s for _, s in groups])
    assert sorted(scored.tolist()) == list(range(70))
    for cand, s in groups:
        assert len(cand) == 32 and len(set(cand.tolist())) == 32 and set(s.tolist()) <= set(cand.tolist())
    assert len(retrieval_groups(10, 32)) == 1


def test_grouped_retrieval_equals_independent_computations():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(75, 8, generator=g)
    b = a + 1.2 * torch.randn(75, 8, generator=g)
    out = grouped_retrieval(a, b, group_size=32, ks=(1, 5), seed=4)
    groups = retrieval_groups(75, 32, seed=4)
    for k in (1, 5):
        assert out[f"R@{k}"] == pytest.approx(_brute_recall(a.numpy(), b.numpy(), groups, k))
    assert out["candidates"] == 32 and out["chance@1"] == pytest.approx(1 / 32)
    whole = grouped_retrieval(a[:20], b[:20], group_size=32, ks=(1, 5))
    ref = retrieval_recall(a[:20], b[:20], ks=(1, 5))
    assert whole["R@1"] == pytest.approx(ref[1]) and whole["R@5"] == pytest.approx(ref[5])
    # hand-made: identical embeddings are always found first; a swap of two rows is never
    e = torch.eye(6)
    assert grouped_retrieval(e, e, 4)["R@1"] == 1.0
    assert grouped_retrieval(e, e[[1, 0, 2, 3, 4, 5]], 6)["R@1"] == pytest.approx(4 / 6)


def test_module_retrieval_metrics_on_hand_made_embeddings(setup):
    cfg, _, _ = setup
    model = instantiate(cfg.model, _recursive_=False)
    g = torch.Generator().manual_seed(2)
    geo = torch.randn(40, 5, generator=g)
    video = geo + 0.8 * torch.randn(40, 5, generator=g)
    present = torch.ones(40, dtype=torch.bool)
    present[[3, 7]] = False  # rows without video are left out of the pair
    ret = {"geo": (geo, torch.ones(40, dtype=torch.bool)), "video": (video, present)}
    metrics = model.retrieval_metrics(ret)
    assert not any("text" in k for k in metrics)
    keep = present.numpy()
    groups = retrieval_groups(38, model.retrieval.group_size, model.retrieval.seed)
    gv = _brute_recall(geo.numpy()[keep], video.numpy()[keep], groups, 1)
    vg = _brute_recall(video.numpy()[keep], geo.numpy()[keep], groups, 1)
    assert metrics["val/retrieval/geo->video/R@1"] == pytest.approx(gv)
    assert metrics["val/retrieval/video->geo/R@1"] == pytest.approx(vg)
    assert metrics["val/retrieval/geo-video/R@1"] == pytest.approx((gv + vg) / 2)


# ------------------------------------------------------------------------------ optimiser
def test_adam_warmup_schedule():
    cfg = AdamConfig(lr=1e-3, warmup_steps=4)
    assert [lr_factor(s, cfg) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = AdamConfig(lr=1.0, warmup_steps=2, decay="cosine", decay_steps=12, min_lr_ratio=0.1)
    assert lr_factor(2, cos) == pytest.approx(1.0) and lr_factor(12, cos) == pytest.approx(0.1)
    assert lr_factor(7, cos) == pytest.approx(0.55)
    param = torch.nn.Parameter(torch.zeros(3))
    conf = configure_adam([param], lr=1e-3, betas=[0.9, 0.98], warmup_steps=4)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.9, 0.98)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        param.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="decay_steps"):
        AdamConfig(decay="cosine")


# ------------------------------------------------------------------------------ DDP (slow)
@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(synth_root, tmp_path):
    """`train.py trainer=ddp_cpu`: 2 gloo processes, the datamodule and module pickle, ranks step together."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        str(repo / "train.py"),
        "experiment=demo",
        f"data.root={synth_root}",
        "data.synth=null",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "logger=csv",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert any(r.get("val/loss") for r in rows)
