"""What a pose embedding knows: pose-derived labels, linear probes and grouped retrieval.

Labels come from the geometric pose of a line (B, T, 9) at the model frame rate (listener
frame: x right, y front, z up, head at the origin); a label of -1 means "undefined, leave out".

==============  ========================================================================
left_right      1 when the mean x > 0 (right), 0 when < 0 (left); -1 within
                ``lateral_margin_deg`` of the median plane (straight ahead / behind, where
                left/right is not defined; a text prompt calls these "front"/"back")
left_right_all  the same with no margin (every line)
front_back      1 when the mean y > 0 (front), 0 behind; -1 within ``frontal_margin_deg`` of
                the interaural axis (straight left / right)
front_back_all  the same with no margin
moving          1 when the mouth's path length over the line is >= ``moving_path_m``, else 0
distance        bucket of the mean 3-D mouth distance from the head centre, edges
                ``distance_edges_m`` (default < 1.5 / 1.5-3 / >= 3 m -> 0 / 1 / 2)
==============  ========================================================================

Probes are multinomial logistic regressions (L2, standardised inputs, full-batch L-BFGS) fitted
on training-split embeddings and scored on held-out ones. Retrieval is scored in groups of a
fixed number of candidates so that the figure reads "among ``group_size`` candidates" whatever
the size of the validation set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Probe tasks in a fixed order with their number of classes (distance: len(edges) + 1).
TASKS = ("left_right", "left_right_all", "front_back", "front_back_all", "moving", "distance")


@dataclass
class LabelConfig:
    """Thresholds of :func:`pose_labels` (configs/model/pose_pretrain.yaml, ``probes.labels``).

    lateral_margin_deg: left/right is undefined this close to the median plane [22.5 deg, half
        a 45-degree sector: the synthetic prompts' "front"/"back" sectors].
    frontal_margin_deg: front/back is undefined this close to the interaural axis [22.5 deg].
    moving_path_m: a line whose mouth travels at least this far is "moving" [0.5 m].
    distance_edges_m: distance bucket edges [(1.5, 3.0) m].
    """

    lateral_margin_deg: float = 22.5
    frontal_margin_deg: float = 22.5
    moving_path_m: float = 0.5
    distance_edges_m: Sequence[float] = (1.5, 3.0)

    def __post_init__(self) -> None:
        for name in ("lateral_margin_deg", "frontal_margin_deg"):
            if not 0.0 <= getattr(self, name) < 90.0:
                raise ValueError(f"probes.labels.{name} must be in [0, 90), got {getattr(self, name)}")
        if self.moving_path_m <= 0:
            raise ValueError(f"probes.labels.moving_path_m must be > 0, got {self.moving_path_m}")
        edges = list(self.distance_edges_m)
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"probes.labels.distance_edges_m must increase strictly, got {edges}")

    def n_classes(self, task: str) -> int:
        return len(self.distance_edges_m) + 1 if task == "distance" else 2


def _side(value: torch.Tensor, across: torch.Tensor, margin_deg: float) -> torch.Tensor:
    """1 where value > 0, 0 where < 0, -1 where the angle atan(|value| / |across|) <= margin."""
    label = (value > 0).long()
    angle = torch.rad2deg(torch.atan2(value.abs(), across.abs()))
    undefined = (angle <= margin_deg) if margin_deg > 0 else (value == 0)
    return label.masked_fill(undefined, -1)


def pose_labels(pose: torch.Tensor, mask: torch.Tensor, cfg: Optional[LabelConfig] = None) -> dict[str, torch.Tensor]:
    """Probe labels from poses (B, T, 9) and frame masks (B, T) -> task -> (B,) long (-1 = none)."""
    cfg = cfg or LabelConfig()
    if pose.dim() != 3 or pose.shape[-1] < 3 or pose.shape[:2] != mask.shape:
        raise ValueError(f"pose must be (B, T, 9) with mask (B, T), got {tuple(pose.shape)} and {tuple(mask.shape)}")
    xyz = pose[..., :3].double()
    m = mask.to(xyz.dtype)
    count = m.sum(1).clamp_min(1.0)
    mean = (xyz * m[..., None]).sum(1) / count[:, None]  # (B, 3)
    step = (xyz[:, 1:] - xyz[:, :-1]).norm(dim=-1) * (m[:, 1:] * m[:, :-1])
    path = step.sum(1)  # (B,)
    distance = (xyz.norm(dim=-1) * m).sum(1) / count  # (B,)
    edges = torch.tensor(list(cfg.distance_edges_m), dtype=xyz.dtype, device=pose.device)
    x, y = mean[:, 0], mean[:, 1]
    labels = {
        "left_right": _side(x, y, cfg.lateral_margin_deg),
        "left_right_all": _side(x, y, 0.0),
        "front_back": _side(y, x, cfg.frontal_margin_deg),
        "front_back_all": _side(y, x, 0.0),
        "moving": (path >= cfg.moving_path_m).long(),
        "distance": torch.bucketize(distance, edges, right=True).long(),
    }
    empty = mask.sum(1) == 0
    return {k: v.masked_fill(empty, -1) for k, v in labels.items()}


# ------------------------------------------------------------------------------ linear probe
@dataclass
class ProbeConfig:
    """Logistic-regression probe: L2 weight ``l2`` on standardised inputs, at most ``max_iter``
    L-BFGS iterations; ``normalize``: L2-normalise embeddings first (cosine space)."""

    l2: float = 1e-3
    max_iter: int = 200
    normalize: bool = True


def _prepare(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    x = x.detach().double()
    return F.normalize(x, dim=-1) if normalize else x


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: Optional[ProbeConfig] = None
) -> dict[str, torch.Tensor]:
    """Fit a multinomial logistic regression on x (N, D), labels y (N,) in [0, n_classes).

    Minimises mean cross-entropy + l2 * |W|^2 on standardised inputs with L-BFGS. Returns the
    parameters ``mean``, ``std`` (D,), ``weight`` (D, K), ``bias`` (K,) for :func:`predict_logistic`.
    """
    cfg = cfg or ProbeConfig()
    with torch.inference_mode(False):  # callable from Lightning's validation (inference mode)
        x, y = _prepare(x, cfg.normalize).clone(), y.long().clone()
        return _fit_logistic(x, y, n_classes, cfg)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ProbeConfig) -> dict[str, torch.Tensor]:
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_logistic needs x (N, D) and y (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("fit_logistic: no training rows")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"labels must be in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    with torch.enable_grad():
        weight = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
        opt = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=cfg.max_iter,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z @ weight + bias, y) + cfg.l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    return {
        "mean": mean,
        "std": std,
        "weight": weight.detach(),
        "bias": bias.detach(),
        "normalize": torch.tensor(cfg.normalize),
    }


def predict_logistic(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Class predictions (N,) of a probe from :func:`fit_logistic` on x (N, D)."""
    x = _prepare(x, bool(params["normalize"]))
    z = (x - params["mean"]) / params["std"]
    return (z @ params["weight"] + params["bias"]).argmax(-1)


def probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    cfg: Optional[ProbeConfig] = None,
) -> float:
    """Held-out accuracy of a probe fitted on (train_x, train_y); rows labelled -1 are left out.

    NaN when either side has no labelled row; a training set with one class predicts that class.
    """
    keep_tr, keep_te = train_y >= 0, test_y >= 0
    if not bool(keep_tr.any()) or not bool(keep_te.any()):
        return float("nan")
    ytr, yte = train_y[keep_tr].long(), test_y[keep_te].long().cpu()
    if int(ytr.unique().numel()) == 1:
        pred = torch.full_like(yte, int(ytr[0]))
    else:
        params = fit_logistic(train_x[keep_tr].cpu(), ytr.cpu(), n_classes, cfg)
        pred = predict_logistic(params, test_x[keep_te].cpu())
    return float((pred == yte).double().mean())


# ------------------------------------------------------------------------------ retrieval
def retrieval_groups(n: int, group_size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split n rows (in a seeded random order) into candidate groups of exactly ``group_size``.

    Returns (candidates, scored) index pairs: every row is scored exactly once, against a group
    of ``group_size`` candidates (the last group reuses earlier rows as extra candidates so it
    is full). With n < group_size there is one group of all n rows.
    """
    if group_size < 2:
        raise ValueError(f"retrieval group_size must be >= 2, got {group_size}")
    order = np.random.default_rng(seed).permutation(n)
    if n <= group_size:
        return [(order, order)] if n else []
    groups = []
    for start in range(0, n, group_size):
        end = min(start + group_size, n)
        cand = order[max(0, end - group_size) : end]
        groups.append((cand, order[start:end]))
    return groups


def grouped_retrieval(
    a: torch.Tensor, b: torch.Tensor, group_size: int = 32, ks: Sequence[int] = (1, 5), seed: int = 0
) -> dict[str, float]:
    """Recall@k of finding b_i from a_i (cosine) among ``group_size`` candidates of b.

    a, b: (N, D) paired rows. Returns {"R@k": recall, ..., "candidates": group size used,
    "chance@1": 1 / candidates, "n": N}.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must both be (N, D), got {tuple(a.shape)}, {tuple(b.shape)}")
    n = a.shape[0]
    a = F.normalize(a.detach().double(), dim=-1)
    b = F.normalize(b.detach().double(), dim=-1)
    hits = {k: 0 for k in ks}
    size = 0
    for cand, scored in retrieval_groups(n, group_size, seed):
        cand_t, scored_t = torch.as_tensor(cand), torch.as_tensor(scored)
        sim = a[scored_t] @ b[cand_t].T  # (S, G)
        positive = sim[torch.arange(len(scored)), _positions(cand, scored)]
        rank = (sim > positive[:, None]).sum(1)
        for k in ks:
            hits[k] += int((rank < k).sum())
        size = len(cand)
    out = {f"R@{k}": (hits[k] / n if n else float("nan")) for k in ks}
    out.update(candidates=float(size), n=float(n), **{"chance@1": (1.0 / size if size else float("nan"))})
    return out


def _positions(cand: np.ndarray, scored: np.ndarray) -> torch.Tensor:
    where = {int(c): i for i, c in enumerate(cand)}
    return torch.tensor([where[int(s)] for s in scored])


def summarize_probes(
    train: Mapping[str, torch.Tensor],
    train_labels: Mapping[str, Mapping[str, torch.Tensor]],
    test: Mapping[str, torch.Tensor],
    test_labels: Mapping[str, Mapping[str, torch.Tensor]],
    labels: Optional[LabelConfig] = None,
    probe: Optional[ProbeConfig] = None,
    tasks: Sequence[str] = TASKS,
) -> dict[str, float]:
    """Accuracy per (branch, task): embeddings branch -> (N, D), labels branch -> task -> (N,).

    Returns {"branch/task": accuracy}. A branch's rows must be those it was present for (the
    caller drops the others from both embeddings and labels beforehand).
    """
    labels = labels or LabelConfig()
    out: dict[str, float] = {}
    for branch in test:
        if branch not in train:
            continue
        for task in tasks:
            out[f"{branch}/{task}"] = probe_accuracy(
                train[branch],
                train_labels[branch][task],
                test[branch],
                test_labels[branch][task],
                labels.n_classes(task),
                probe,
            )
    return out


__all__ = [
    "TASKS",
    "LabelConfig",
    "ProbeConfig",
    "pose_labels",
    "fit_logistic",
    "predict_logistic",
    "probe_accuracy",
    "retrieval_groups",
    "grouped_retrieval",
    "summarize_probes",
]
