"""Contrastive loss: InfoNCE against direct numpy computations, masks, hard/extra negatives,
temperature, chunk pooling and the multi-pair loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isdrama.models.contrastive import (
    LearnableTemperature,
    MultimodalContrastiveLoss,
    chunk_pool,
    info_nce,
    negatives_from_labels,
    retrieval_recall,
)


def _np_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_ce(logits: np.ndarray) -> float:
    """Mean cross-entropy with targets on the diagonal; -inf entries count as absent."""
    losses = []
    for i, row in enumerate(logits):
        finite = row[np.isfinite(row)]
        m = finite.max()
        lse = m + math.log(np.exp(finite - m).sum())
        losses.append(lse - row[i])
    return float(np.mean(losses))


def _np_info_nce(a, b, tau, allowed=None, weight=None, extra_b=None, extra_a=None):
    """Independent reference: logits = cos / tau, CE both ways, averaged."""
    a, b = _np_normalise(a.astype(np.float64)), _np_normalise(b.astype(np.float64))
    n = len(a)
    logits = a @ b.T / tau
    if weight is not None:  # a weight w on a negative = log w added to its logit
        logits = logits + np.where(np.eye(n, dtype=bool), 0.0, np.log(weight))
    if allowed is not None:
        logits = np.where(allowed | np.eye(n, dtype=bool), logits, -np.inf)
    rows_ab, rows_ba = logits, logits.T
    if extra_b is not None:
        ex = np.einsum("nd,nkd->nk", a, extra_b / np.linalg.norm(extra_b, axis=2, keepdims=True))
        rows_ab = np.concatenate([rows_ab, ex / tau], axis=1)
    if extra_a is not None:
        ex = np.einsum("nd,nkd->nk", b, extra_a / np.linalg.norm(extra_a, axis=2, keepdims=True))
        rows_ba = np.concatenate([rows_ba, ex / tau], axis=1)
    return 0.5 * (_np_ce(rows_ab) + _np_ce(rows_ba))


def test_info_nce_equals_direct_computation():
    a = np.array([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.0, -0.3, 1.0], [1.0, 1.0, 1.0]])
    b = np.array([[0.9, 0.1, 0.4], [0.0, 1.0, 0.3], [0.5, 0.0, 1.0], [-1.0, 0.2, 0.3]])
    tau = 0.2
    got = info_nce(torch.tensor(a), torch.tensor(b), tau).item()
    # plain formula written out once more, without helpers, for the 4 x 4 case
    an, bn = _np_normalise(a), _np_normalise(b)
    s = an @ bn.T / tau
    ce_ab = np.mean([-s[i, i] + np.log(np.exp(s[i]).sum()) for i in range(4)])
    ce_ba = np.mean([-s[i, i] + np.log(np.exp(s[:, i]).sum()) for i in range(4)])
    assert got == pytest.approx(0.5 * (ce_ab + ce_ba), rel=1e-9)
    assert got == pytest.approx(_np_info_nce(a, b, tau), rel=1e-9)


def test_info_nce_masks_weights_and_extra_negatives():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    tau = 0.3
    allowed = rng.random((5, 5)) > 0.4
    got = info_nce(torch.tensor(a), torch.tensor(b), tau, valid_negatives=torch.tensor(allowed))
    assert got.item() == pytest.approx(_np_info_nce(a, b, tau, allowed=allowed), rel=1e-9)
    assert got.item() != pytest.approx(_np_info_nce(a, b, tau), rel=1e-6)

    groups = np.array([0, 0, 1, 1, 1])
    w = np.where(groups[:, None] == groups[None, :], 3.0, 1.0)
    bias = torch.tensor(np.log(w))
    got = info_nce(torch.tensor(a), torch.tensor(b), tau, logit_bias=bias)
    assert got.item() == pytest.approx(_np_info_nce(a, b, tau, weight=w), rel=1e-9)

    ea, eb = rng.standard_normal((5, 2, 4)), rng.standard_normal((5, 2, 4))
    got = info_nce(torch.tensor(a), torch.tensor(b), tau, extra_b=torch.tensor(eb), extra_a=torch.tensor(ea))
    assert got.item() == pytest.approx(_np_info_nce(a, b, tau, extra_b=eb, extra_a=ea), rel=1e-9)
    # a masked-out extra negative is the same as not passing it
    got = info_nce(
        torch.tensor(a),
        torch.tensor(b),
        tau,
        extra_b=torch.tensor(eb),
        extra_b_mask=torch.zeros(5, 2, dtype=torch.bool),
    )
    assert got.item() == pytest.approx(_np_info_nce(a, b, tau), rel=1e-9)


def test_aligned_embeddings_beat_shuffled_ones():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(16, 8, generator=g)
    b = a + 0.05 * torch.randn(16, 8, generator=g)
    perm = torch.roll(torch.arange(16), 1)
    assert info_nce(a, b, 0.1) < info_nce(a, b[perm], 0.1)
    assert info_nce(a, b, 0.1) < 0.1  # nearly perfect


def test_temperature_is_learnable_and_clamped():
    temp = LearnableTemperature(init=0.07, min_tau=0.01, max_tau=1.0)
    assert temp().item() == pytest.approx(0.07)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    info_nce(a, b, temp()).backward()
    assert temp.log_tau.grad is not None and temp.log_tau.grad.abs() > 0
    with torch.no_grad():
        temp.log_tau.fill_(10.0)
    assert temp().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        LearnableTemperature(init=2.0, max_tau=1.0)


def test_chunk_pool_means_and_validity():
    x = torch.arange(2 * 7 * 1, dtype=torch.float32).reshape(2, 7, 1)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    pooled, valid = chunk_pool(x, mask, chunk_frames=3, min_fraction=0.5)
    assert pooled.shape == (2, 3, 1)
    assert pooled[0, :, 0].tolist() == [1.0, 4.0, 6.0]  # frames 0-2, 3-5, 6
    assert pooled[1, :2, 0].tolist() == [8.0, 10.0]  # frames 7-9, 10 (one valid)
    assert valid.tolist() == [[True, True, False], [True, False, False]]


def test_negatives_from_labels_and_recall():
    labels = torch.tensor([0, 1, 0])
    assert negatives_from_labels(labels).tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    a = torch.eye(4)
    r = retrieval_recall(a, a, ks=(1,))
    assert r[1] == 1.0
    assert retrieval_recall(a, a[[1, 0, 3, 2]], ks=(1,))[1] == 0.0


def test_multimodal_loss_sums_pairs_and_respects_presence():
    torch.manual_seed(0)
    B, P = 6, 8
    pooled = {k: torch.randn(B, P) for k in ("geo", "video", "text")}
    present = {
        "geo": torch.ones(B, dtype=torch.bool),
        "video": torch.ones(B, dtype=torch.bool),
        "text": torch.tensor([True, True, False, True, True, True]),
    }
    loss_fn = MultimodalContrastiveLoss(temperature_init=0.1)
    out = loss_fn(pooled, present)
    tau = 0.1
    keep = present["text"]
    expected = {
        "pair/geo-video": info_nce(pooled["geo"], pooled["video"], tau),
        "pair/geo-text": info_nce(pooled["geo"][keep], pooled["text"][keep], tau),
        "pair/video-text": info_nce(pooled["video"][keep], pooled["text"][keep], tau),
    }
    for k, v in expected.items():
        assert out[k].item() == pytest.approx(v.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(sum(v.item() for v in expected.values()), rel=1e-5)
    out["loss"].backward()
    assert loss_fn.temperature.log_tau.grad is not None

    # a subset of branches: only the pair that exists is computed
    out = loss_fn({"geo": pooled["geo"], "text": pooled["text"]})
    assert set(k for k in out if k.startswith("pair/")) == {"pair/geo-text"}


def test_multimodal_loss_hard_negatives_and_chunks():
    torch.manual_seed(1)
    B, C, P = 4, 3, 5
    pooled = {k: torch.randn(B, P) for k in ("geo", "text")}
    chunks = {k: torch.randn(B, C, P) for k in ("geo", "text")}
    chunk_mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    groups = torch.tensor([0, 0, 1, 1])
    loss_fn = MultimodalContrastiveLoss(
        pairs=[("geo", "text")], temperature_init=0.2, hard_negative_weight=2.0, chunk_weight=0.5
    )
    out = loss_fn(pooled, chunks=chunks, chunk_mask=chunk_mask, groups=groups)
    w = np.where(groups.numpy()[:, None] == groups.numpy()[None, :], 2.0, 1.0)
    exp_pair = _np_info_nce(pooled["geo"].double().numpy(), pooled["text"].double().numpy(), 0.2, weight=w)
    assert out["pair/geo-text"].item() == pytest.approx(exp_pair, rel=1e-5)
    # chunks: positives = same line same chunk, other chunks of the same line excluded
    line = torch.arange(B)[:, None].expand(B, C)[chunk_mask].numpy()
    ca, cb = chunks["geo"][chunk_mask].double().numpy(), chunks["text"][chunk_mask].double().numpy()
    allowed = line[:, None] != line[None, :]
    cw = np.where(groups.numpy()[line][:, None] == groups.numpy()[line][None, :], 2.0, 1.0)
    exp_chunk = _np_info_nce(ca, cb, 0.2, allowed=allowed, weight=cw)
    assert out["chunk/geo-text"].item() == pytest.approx(exp_chunk, rel=1e-5)
    assert out["loss"].item() == pytest.approx(exp_pair + 0.5 * exp_chunk, rel=1e-5)


def test_multimodal_loss_extra_negatives_per_branch():
    torch.manual_seed(2)
    pooled = {k: torch.randn(3, 4) for k in ("geo", "video")}
    extra = {"video": torch.randn(3, 2, 4)}  # negatives for geo anchors, in video space
    loss_fn = MultimodalContrastiveLoss(pairs=[("geo", "video")], temperature_init=0.5)
    out = loss_fn(pooled, extra_negatives=extra)
    exp = _np_info_nce(
        pooled["geo"].double().numpy(), pooled["video"].double().numpy(), 0.5, extra_b=extra["video"].double().numpy()
    )
    assert out["pair/geo-video"].item() == pytest.approx(exp, rel=1e-5)
