"""Pose pre-training stage: probe labels, retrieval and probes against independent computations;
a real fit through the composed `experiment=demo` config; falling loss; checkpoint round trip."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from isdrama.lit.probes import grouped_retrieval, pose_labels, probe_accuracy
from test_configs import compose_train


# ---------------------------------------------------------------------------------- helpers
def test_pose_labels_from_hand_made_poses():
    T = 10
    pose = torch.zeros(4, T, 9)
    pose[0, :, 0], pose[0, :, 1] = -2.0, 1.0            # left-front, static
    pose[1, :, 0], pose[1, :, 1] = 2.0, -1.0            # right-back, static
    pose[2, :, 0] = torch.linspace(-1.0, 1.0, T)        # walks 2 m across the front
    pose[2, :, 1] = 2.0
    pose[3, :, 1] = 5.0                                 # straight ahead, 5 m
    mask = torch.ones(4, T, dtype=torch.bool)
    labels = pose_labels(pose, mask)
    assert labels["left_right"].tolist() == [0, 1, -1, -1]  # near-frontal ones have no side
    assert labels["left_right_all"][:2].tolist() == [0, 1]
    assert labels["front_back"].tolist()[:2] == [1, 0]
    assert labels["moving"].tolist() == [0, 0, 1, 0]
    assert labels["distance"].tolist() == [1, 1, 1, 2]   # edges 1.5 m and 3 m


def test_grouped_retrieval_equals_direct_ranking():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 8, generator=g)
    b = a + 0.9 * torch.randn(12, 8, generator=g)
    got = grouped_retrieval(a, b, group_size=32, ks=(1, 5))
    an = a / a.norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    sim = (an @ bn.T).numpy()
    rank = np.array([(sim[i] > sim[i, i]).sum() for i in range(12)])  # all 12 are candidates
    assert got["R@1"] == pytest.approx((rank < 1).mean())
    assert got["R@5"] == pytest.approx((rank < 5).mean())
    assert grouped_retrieval(a, a, group_size=4)["R@1"] == 1.0
    assert grouped_retrieval(a, a, group_size=4)["candidates"] == 4


def test_probe_accuracy_separable_and_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 6, generator=g)
    y = (x[:, 0] > 0).long()
    assert probe_accuracy(x[:60], y[:60], x[60:], y[60:], 2) >= 0.95
    noise_y = torch.randint(0, 2, (80,), generator=g)
    assert probe_accuracy(x[:60], noise_y[:60], x[60:], noise_y[60:], 2) < 0.85
    assert math.isnan(probe_accuracy(x[:4], torch.full((4,), -1), x[4:8], y[4:8], 2))


def test_grouped_retrieval_many_groups_equals_direct_ranking():
    """n > group_size: every row is ranked against its own group of exactly 32 candidates."""
    g = torch.Generator().manual_seed(2)
    n, size = 70, 32
    a = torch.randn(n, 16, generator=g)
    b = a + 1.2 * torch.randn(n, 16, generator=g)
    got = grouped_retrieval(a, b, group_size=size, ks=(1, 5), seed=3)
    an, bn = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True), b.numpy() / np.linalg.norm(
        b.numpy(), axis=1, keepdims=True)
    order = np.random.default_rng(3).permutation(n)
    ranks = {}
    for start in range(0, n, size):                 # groups 0-31, 32-63, and 38-69 scoring 64-69
        end = min(start + size, n)
        cand = order[end - size:end]
        for i in order[start:end]:
            others = cand[cand != i]                 # the positive itself never outranks itself
            ranks[int(i)] = int((an[i] @ bn[others].T > an[i] @ bn[i]).sum())
    r = np.array([ranks[i] for i in range(n)])
    assert len(ranks) == n
    assert got["candidates"] == size and got["chance@1"] == pytest.approx(1 / size)
    assert got["R@1"] == pytest.approx((r < 1).mean())
    assert got["R@5"] == pytest.approx((r < 5).mean())
    assert 0 < got["R@1"] < 1                        # the case is not degenerate


def test_probe_accuracy_equals_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from isdrama.lit.probes import ProbeConfig

    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.8 * rng.standard_normal(300) > 0).astype(np.int64)
    tr, te = slice(0, 200), slice(200, 300)
    cfg = ProbeConfig(l2=1e-2, max_iter=500, normalize=False)
    ours = probe_accuracy(torch.from_numpy(x[tr]), torch.from_numpy(y[tr]), torch.from_numpy(x[te]),
                          torch.from_numpy(y[te]), 2, cfg)
    mean, std = x[tr].mean(0), x[tr].std(0)
    # mean cross-entropy + l2 |W|^2  ==  (C * sum CE + |W|^2 / 2) / (C N)  with C = 1 / (2 l2 N)
    ref = LogisticRegression(C=1.0 / (2 * cfg.l2 * 200), tol=1e-10, max_iter=5000)
    ref.fit((x[tr] - mean) / std, y[tr])
    expected = float((ref.predict((x[te] - mean) / std) == y[te]).mean())
    assert 0.6 < expected < 1.0
    assert ours == pytest.approx(expected, abs=0.011)  # at most one borderline row may differ


# ---------------------------------------------------------------------------------- real fit
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from isdrama.data.synth.generator import SynthConfig, synthesize_dataset

    root = tmp_path_factory.mktemp("synth")
    synthesize_dataset(root, SynthConfig(n_dramas=6, seed=5, lines_per_drama=(3, 4)), num_workers=1, progress=False)
    return root


def _cfg(root: Path, out: Path, *extra: str):
    cfg = compose_train(["experiment=demo", f"data.root={root}", "data.synth=null", "logger=csv",
                         "data.val_fraction=0.34", "data.test_fraction=0", *extra], out)
    with open_dict(cfg):
        cfg.callbacks.model_checkpoint.dirpath = str(out / "ckpt")
    return cfg


def test_demo_experiment_fits_and_logs_validation_metrics(synth_root, tmp_path):
    from isdrama.training import run_training

    cfg = _cfg(synth_root, tmp_path, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
               "trainer.enable_progress_bar=false")
    metrics = run_training(cfg)
    for key in ("val/loss", "val/retrieval/geo-video/R@1", "val/retrieval/geo-text/R@1",
                "val/probe/geo/moving", "val/probe/video/left_right_all", "val/probe/text/moving"):
        assert key in metrics and math.isfinite(metrics[key]), key
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert any(r.get("val/loss") for r in rows) and any(r.get("train/loss_epoch") for r in rows)
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_loss_falls_and_checkpoint_round_trip(synth_root, tmp_path):
    import pytorch_lightning as pl

    from isdrama.lit.pose_pretrain import PosePretrainModule

    cfg = _cfg(synth_root, tmp_path, "data.train.max_frames=1500")  # a small fixed batch
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = instantiate(cfg.model, _recursive_=False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    losses = []
    for _ in range(20):
        loss = model.losses(batch, model(batch))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = PosePretrainModule.load_from_checkpoint(path)
    model.eval(), loaded.eval()
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    for branch in a["pooled"]:
        torch.testing.assert_close(a["pooled"][branch], b["pooled"][branch])


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(synth_root, tmp_path):
    """`train.py trainer=ddp_cpu`: 2 gloo processes, the datamodule and module pickle, ranks step together."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "train.py"), "experiment=demo", f"data.root={synth_root}", "data.synth=null",
           "data.val_fraction=0.34", "data.test_fraction=0", "logger=csv", "trainer=ddp_cpu", "trainer.max_epochs=1",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert any(r.get("val/loss") for r in rows)
