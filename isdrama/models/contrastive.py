"""Contrastive alignment of the pose branches: symmetric InfoNCE with a learnable temperature.

Conventions: embeddings are (N, D) rows paired by index (row i of ``a`` and row i of ``b`` are
the same line, or the same chunk of the same line). Similarities are cosines divided by the
temperature tau; the loss of a pair of branches is the mean of the cross-entropies a -> b and
b -> a. Negatives are the other in-batch rows (optionally restricted by a validity mask and
re-weighted for hard negatives of the same group, e.g. the same drama), plus optional extra
negative embeddings per anchor.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from isdrama.models.layers import masked_mean

#: The three branch pairs of the paper.
DEFAULT_PAIRS = (("geo", "video"), ("geo", "text"), ("video", "text"))


class LearnableTemperature(nn.Module):
    """tau = exp(log_tau), log_tau learnable and clamped to [log(min_tau), log(max_tau)].

    Args:
        init: initial tau [0.07].
        min_tau, max_tau: clamp range [0.01, 1.0].
    """

    def __init__(self, init: float = 0.07, min_tau: float = 0.01, max_tau: float = 1.0):
        super().__init__()
        if not 0 < min_tau <= init <= max_tau:
            raise ValueError(f"need 0 < min_tau <= init <= max_tau, got {min_tau}, {init}, {max_tau}")
        self.log_tau = nn.Parameter(torch.tensor(math.log(init)))
        self.log_min, self.log_max = math.log(min_tau), math.log(max_tau)

    def forward(self) -> torch.Tensor:
        return self.log_tau.clamp(self.log_min, self.log_max).exp()


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    tau: torch.Tensor | float,
    valid_negatives: Optional[torch.Tensor] = None,
    logit_bias: Optional[torch.Tensor] = None,
    extra_b: Optional[torch.Tensor] = None,
    extra_b_mask: Optional[torch.Tensor] = None,
    extra_a: Optional[torch.Tensor] = None,
    extra_a_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of a (N, D) and b (N, D).

    Args:
        tau: temperature (scalar tensor or float); logits = cos(a_i, b_j) / tau.
        valid_negatives: (N, N) bool, True where (i, j) may serve as a negative (the diagonal
            is always the positive). False entries are left out of both softmaxes.
        logit_bias: (N, N) float added to negative logits (log of a weight; diagonal ignored).
        extra_b: (N, K, D) extra negatives in b's space for anchor a_i; extra_b_mask (N, K).
        extra_a: (N, K, D) extra negatives in a's space for anchor b_i; extra_a_mask (N, K).

    Returns the scalar 0.5 * (CE(a -> b) + CE(b -> a)), each averaged over the N rows.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must both be (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    eye = torch.eye(n, dtype=torch.bool, device=a.device)
    logits = a @ b.T / tau
    if logit_bias is not None:
        logits = logits + logit_bias.masked_fill(eye, 0.0)
    if valid_negatives is not None:
        if valid_negatives.shape != (n, n):
            raise ValueError(f"valid_negatives must be ({n}, {n}), got {tuple(valid_negatives.shape)}")
        logits = logits.masked_fill(~(valid_negatives | eye), float("-inf"))
    target = torch.arange(n, device=a.device)

    def with_extra(
        rows: torch.Tensor, anchor: torch.Tensor, extra: Optional[torch.Tensor], mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        if extra is None:
            return rows
        if extra.dim() != 3 or extra.shape[0] != n or extra.shape[2] != anchor.shape[1]:
            raise ValueError(f"extra negatives must be ({n}, K, {anchor.shape[1]}), got {tuple(extra.shape)}")
        ex = torch.einsum("nd,nkd->nk", anchor, F.normalize(extra, dim=-1)) / tau
        if mask is not None:
            ex = ex.masked_fill(~mask, float("-inf"))
        return torch.cat([rows, ex], dim=1)

    loss_ab = F.cross_entropy(with_extra(logits, a, extra_b, extra_b_mask), target)
    loss_ba = F.cross_entropy(with_extra(logits.T, b, extra_a, extra_a_mask), target)
    return 0.5 * (loss_ab + loss_ba)


def chunk_pool(
    x: torch.Tensor, mask: torch.Tensor, chunk_frames: int, min_fraction: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over fixed chunks of frames: x (B, T, D), mask (B, T) -> (B, C, D), (B, C).

    C = ceil(T / chunk_frames). A chunk is valid when at least ``min_fraction`` of its
    ``chunk_frames`` frames are valid (a line always keeps its first chunk).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    B, T, D = x.shape
    C = -(-T // chunk_frames)
    pad = C * chunk_frames - T
    xp = F.pad(x, (0, 0, 0, pad))
    mp = F.pad(mask, (0, pad), value=False)
    xc = xp.reshape(B * C, chunk_frames, D)
    mc = mp.reshape(B * C, chunk_frames)
    pooled = masked_mean(xc, mc).reshape(B, C, D)
    filled = mc.sum(dim=1).reshape(B, C)
    valid = filled >= max(1.0, min_fraction * chunk_frames)
    valid[:, 0] |= filled[:, 0] > 0
    return pooled, valid


def negatives_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """(N,) labels -> (N, N) bool: True where the labels differ (pairs with the same label,
    e.g. the same motion or the same pose prompt, are not used as negatives)."""
    return labels[:, None] != labels[None, :]


def retrieval_recall(a: torch.Tensor, b: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Recall@k of retrieving b_i from a_i among all rows of b (cosine), (N, D) each."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    rank = (sim > sim.diagonal()[:, None]).sum(dim=1)  # 0 = retrieved first
    return {k: float((rank < k).float().mean()) for k in ks}


class MultimodalContrastiveLoss(nn.Module):
    """Sum of symmetric InfoNCE losses over branch pairs, on pooled and chunk embeddings.

    Args:
        pairs: branch pairs [geo-video, geo-text, video-text].
        temperature_init, min_temperature, max_temperature: one learnable tau shared by the
            pairs [0.07, 0.01, 1.0].
        chunk_weight: weight of the chunk-level losses (0 disables them) [1.0].
        hard_negative_weight: in-batch negatives of the anchor's group (same drama) count
            this many times in the softmax denominator (1 = plain InfoNCE) [1.0].
        same_line_chunk_negatives: other chunks of the same line are negatives in the chunk
            loss (off by default: a static speaker's chunks are identical) [False].
    """

    def __init__(
        self,
        pairs: Sequence[Sequence[str]] = DEFAULT_PAIRS,
        temperature_init: float = 0.07,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        chunk_weight: float = 1.0,
        hard_negative_weight: float = 1.0,
        same_line_chunk_negatives: bool = False,
    ):
        super().__init__()
        self.pairs = tuple((str(p[0]), str(p[1])) for p in pairs)
        for p in self.pairs:
            if p[0] == p[1]:
                raise ValueError(f"a contrastive pair needs two different branches, got {p}")
        if hard_negative_weight <= 0:
            raise ValueError(f"hard_negative_weight must be > 0, got {hard_negative_weight}")
        self.temperature = LearnableTemperature(temperature_init, min_temperature, max_temperature)
        self.chunk_weight = chunk_weight
        self.hard_negative_weight = hard_negative_weight
        self.same_line_chunk_negatives = same_line_chunk_negatives

    def _bias(self, groups: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
        if groups is None or self.hard_negative_weight == 1.0:
            return None
        same = groups[:, None] == groups[None, :]
        return same.to(like.dtype) * math.log(self.hard_negative_weight)

    def forward(
        self,
        pooled: Mapping[str, torch.Tensor],
        present: Optional[Mapping[str, torch.Tensor]] = None,
        chunks: Optional[Mapping[str, torch.Tensor]] = None,
        chunk_mask: Optional[torch.Tensor] = None,
        groups: Optional[torch.Tensor] = None,
        valid_negatives: Optional[torch.Tensor] = None,
        extra_negatives: Optional[Mapping[str, torch.Tensor]] = None,
        extra_negative_mask: Optional[Mapping[str, torch.Tensor]] = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of every pair whose two branches are in ``pooled``.

        Args:
            pooled: branch -> (B, P) line embeddings.
            present: branch -> (B,) bool, rows that really have that branch's input (others
                are left out of that branch's pairs). Default: all rows.
            chunks: branch -> (B, C, P) chunk embeddings; chunk_mask (B, C) valid chunks.
            groups: (B,) long group id (drama) for hard-negative weighting.
            valid_negatives: (B, B) bool, pairs of lines allowed as negatives.
            extra_negatives: branch -> (B, K, P) extra negatives in that branch's space (for
                anchors of the other branch of each pair); extra_negative_mask branch -> (B, K).

        Returns a dict: ``loss`` (weighted sum), ``tau``, and per pair ``pair/a-b`` and
        ``chunk/a-b`` losses (only those computed).
        """
        tau = self.temperature()
        out: dict[str, torch.Tensor] = {"tau": tau.detach()}
        terms: list[torch.Tensor] = []
        extra_negatives = extra_negatives or {}
        extra_negative_mask = extra_negative_mask or {}
        for a_name, b_name in self.pairs:
            if a_name not in pooled or b_name not in pooled:
                continue
            a, b = pooled[a_name], pooled[b_name]
            rows = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
            if present is not None:
                rows = rows & present.get(a_name, rows) & present.get(b_name, rows)
            if int(rows.sum()) < 2:
                continue
            idx = rows.nonzero().squeeze(1)
            sub = lambda m: None if m is None else m[idx][:, idx]
            pick = lambda t: None if t is None else t[idx]
            bias = self._bias(pick(groups), a)
            loss = info_nce(
                a[idx],
                b[idx],
                tau,
                sub(valid_negatives),
                bias,
                pick(extra_negatives.get(b_name)),
                pick(extra_negative_mask.get(b_name)),
                pick(extra_negatives.get(a_name)),
                pick(extra_negative_mask.get(a_name)),
            )
            out[f"pair/{a_name}-{b_name}"] = loss
            terms.append(loss)
            if chunks is None or self.chunk_weight == 0 or a_name not in chunks or b_name not in chunks:
                continue
            if chunk_mask is None:
                raise ValueError("chunks given without chunk_mask (B, C)")
            ca, cb = chunks[a_name][idx], chunks[b_name][idx]
            cm = chunk_mask[idx]
            line = torch.arange(len(idx), device=a.device)[:, None].expand_as(cm)[cm]
            if line.numel() < 2:
                continue
            allowed = torch.ones(line.numel(), line.numel(), dtype=torch.bool, device=a.device)
            if valid_negatives is not None:
                allowed = sub(valid_negatives)[line][:, line]
            if not self.same_line_chunk_negatives:
                allowed = allowed & (line[:, None] != line[None, :])
            g = pick(groups)
            cbias = self._bias(None if g is None else g[line], a)
            closs = info_nce(ca[cm], cb[cm], tau, allowed, cbias)
            out[f"chunk/{a_name}-{b_name}"] = closs
            terms.append(self.chunk_weight * closs)
        out["loss"] = torch.stack(terms).sum() if terms else tau.new_zeros(()) * tau
        return out
