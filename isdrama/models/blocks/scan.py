"""Selective-scan backends of the Mamba layer: h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t,
y_t = C_t . h_t + D x_t.

All backends take the same tensors and return the same y (B, L, E):

- ``chunked`` (the CPU default): on CPU the fused C kernels of
  :mod:`isdrama.models.blocks.cpu_kernels` (forward, and a fused backward in training) where
  they build; otherwise a two-level scan in plain PyTorch. The sequence is cut into chunks
  of ``chunk`` frames; a sequential pass over the positions inside a chunk runs for all chunks at
  once, then a sequential pass over the chunks carries the states across; the carry is added back
  with the within-chunk decay products. About ``chunk + L / chunk`` small steps instead of L,
  only products of decays in (0, 1] (no overflow), and plain autograd.
- ``loop``: the reference recurrence, one step per frame.
- ``mambapy``: the Blelloch parallel scan of the ``mambapy`` package (PyPI; pure PyTorch; pads to a
  power of two).
- ``cuda``: the ``mamba-ssm`` selective-scan kernel (``pip install mamba-ssm``, CUDA only).

Shapes: x, delta (B, L, E) with delta after softplus; A (E, N) (negative); Bm, Cm (B, L, N);
D (E,). The recurrence runs in fp32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from isdrama.models.blocks.cpu_kernels import fused_kernels_available, scan_fused_cpu, scan_fused_train

BACKENDS = ("chunked", "loop", "mambapy", "cuda")


def _discretise(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor):
    """(B, L, E, N) decays exp(delta A) and inputs delta B x, fp32."""
    delta = delta.float()
    dA = torch.exp(delta.unsqueeze(-1) * A.float())
    dBx = (delta * x.float()).unsqueeze(-1) * Bm.float().unsqueeze(2)
    return dA, dBx


def _readout(h: torch.Tensor, x: torch.Tensor, Cm: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    y = torch.einsum("blen,bln->ble", h, Cm.float())
    return (y + D.float() * x.float()).to(x.dtype)


def scan_loop(x, delta, A, Bm, Cm, D) -> torch.Tensor:
    """The recurrence frame by frame (reference)."""
    dA, dBx = _discretise(x, delta, A, Bm)
    h = torch.zeros_like(dBx[:, 0])
    states = []
    for t in range(x.shape[1]):
        h = dA[:, t] * h + dBx[:, t]
        states.append(h)
    return _readout(torch.stack(states, dim=1), x, Cm, D)


def scan_chunked(x, delta, A, Bm, Cm, D, chunk: int = 0) -> torch.Tensor:
    """Two-level scan (see the module docstring); ``chunk`` <= 0 picks ceil(sqrt(L)).

    On CPU where the fused C kernels build (:mod:`isdrama.models.blocks.cpu_kernels`) the
    recurrence runs in one pass: without autograd (sampling, validation) the plain kernel, with
    autograd (training) the kernel pair with a fused backward. Elsewhere (CUDA tensors without
    mamba-ssm, or no C compiler): the in-place form :func:`scan_chunked_inplace` without autograd
    (2-4x faster than the differentiable form), :func:`scan_chunked_differentiable` with it
    (docs/benchmarks.md, "Scan backends")."""
    records = torch.is_grad_enabled() and any(t.requires_grad for t in (x, delta, A, Bm, Cm, D))
    if x.device.type == "cpu" and fused_kernels_available():
        return scan_fused_train(x, delta, A, Bm, Cm, D) if records else scan_fused_cpu(x, delta, A, Bm, Cm, D)
    if not records:
        return scan_chunked_inplace(x, delta, A, Bm, Cm, D, chunk=chunk)
    return scan_chunked_differentiable(x, delta, A, Bm, Cm, D, chunk=chunk)


def scan_chunked_differentiable(x, delta, A, Bm, Cm, D, chunk: int = 0) -> torch.Tensor:
    """The chunked scan in plain autograd operations (training)."""
    dA, dBx = _discretise(x, delta, A, Bm)
    Bsz, L, E, N = dA.shape
    c = int(chunk) if chunk > 0 else max(1, math.ceil(math.sqrt(L)))
    n = -(-L // c)
    pad = n * c - L
    if pad:  # padded steps: decay 1, input 0 (they only follow the real ones)
        dA = torch.cat([dA, dA.new_ones(Bsz, pad, E, N)], dim=1)
        dBx = torch.cat([dBx, dBx.new_zeros(Bsz, pad, E, N)], dim=1)
    # step-major layout (c, B, n, E, N), unbound once: each step is a contiguous slice (indexing
    # inside the loops would make autograd write a full-size zero gradient per index)
    dA_steps = dA.view(Bsz, n, c, E, N).permute(2, 0, 1, 3, 4).contiguous().unbind(0)
    dBx_steps = dBx.view(Bsz, n, c, E, N).permute(2, 0, 1, 3, 4).contiguous().unbind(0)
    # 1. within each chunk (all chunks at once): local states from a zero start, cumulative decay
    h = torch.zeros_like(dBx_steps[0])
    decay = torch.ones_like(dA_steps[0])
    local, decays = [], []
    for a, b in zip(dA_steps, dBx_steps):
        h = a * h + b
        decay = decay * a
        local.append(h)
        decays.append(decay)
    # 2. across chunks: the state entering each chunk (from each chunk's last local state and decay)
    carry = torch.zeros_like(h[:, 0])
    carries = []
    for last_decay, last_h in zip(decay.unbind(1), h.unbind(1)):
        carries.append(carry)
        carry = last_decay * carry + last_h
    carry_in = torch.stack(carries, dim=1)  # (B, n, E, N)
    states = torch.stack(local, dim=0) + torch.stack(decays, dim=0) * carry_in  # (c, B, n, E, N)
    states = states.permute(1, 2, 0, 3, 4).reshape(Bsz, n * c, E, N)[:, :L]
    return _readout(states, x, Cm, D)


@torch.no_grad()
def scan_chunked_inplace(x, delta, A, Bm, Cm, D, chunk: int = 0) -> torch.Tensor:
    """The chunked scan without autograd: the state-sized tensors are built once, step-major and
    channels last ((c, B, n, N, E), from the small (B, L, E) / (B, L, N) inputs permuted first,
    so every broadcast runs along the contiguous E), and overwritten in place: the decays become
    within-chunk cumulative decays, the inputs local states, then full states."""
    Bsz, L, E = x.shape
    N = A.shape[-1]
    c = int(chunk) if chunk > 0 else max(1, math.ceil(math.sqrt(L)))
    n = -(-L // c)
    pad = n * c - L
    delta = delta.float()
    xd = delta * x.float()
    Bm, Cm = Bm.float(), Cm.float()
    if pad:  # padded steps: delta 0 -> decay 1, input 0 (they only follow the real ones)
        delta, xd, Bm, Cm = (F.pad(t, (0, 0, 0, pad)) for t in (delta, xd, Bm, Cm))

    def step_major(t: torch.Tensor) -> torch.Tensor:  # (B, n c, F) -> (c, B, n, F), contiguous
        return t.reshape(Bsz, n, c, t.shape[-1]).permute(2, 0, 1, 3).contiguous()

    dA = torch.mul(step_major(delta).unsqueeze(-2), A.float().t()).exp_()  # (c, B, n, N, E)
    h = step_major(xd).unsqueeze(-2) * step_major(Bm).unsqueeze(-1)  # dBx, then the states
    for k in range(1, c):  # 1. within each chunk, all chunks at once
        h[k].addcmul_(dA[k], h[k - 1])
        dA[k].mul_(dA[k - 1])
    carries = torch.empty(Bsz, n, N, E, dtype=h.dtype, device=h.device)  # 2. across chunks
    carry = torch.zeros(Bsz, N, E, dtype=h.dtype, device=h.device)
    for j in range(n):
        carries[:, j] = carry
        carry = dA[c - 1, :, j] * carry + h[c - 1, :, j]
    h.addcmul_(dA, carries)  # 3. states = local + cumulative decay * carry in
    y = torch.matmul(step_major(Cm).unsqueeze(-2), h).squeeze(-2)  # (c, B, n, E)
    y = y.permute(1, 2, 0, 3).reshape(Bsz, n * c, E)[:, :L]
    return (y + D.float() * x.float()).to(x.dtype)


def scan_mambapy(x, delta, A, Bm, Cm, D) -> torch.Tensor:
    """mambapy's parallel (Blelloch) scan."""
    try:
        from mambapy.pscan import pscan
    except ImportError as err:  # pragma: no cover - mambapy is a dependency
        raise ImportError(f"model...mamba.backend=mambapy needs `pip install mambapy` ({err})") from err
    dA, dBx = _discretise(x, delta, A, Bm)
    return _readout(pscan(dA, dBx), x, Cm, D)


def scan_cuda(x, delta, A, Bm, Cm, D) -> torch.Tensor:
    """The mamba-ssm CUDA kernel (delta already after softplus, so no bias / softplus inside)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise ImportError(
            "model.transformer.mamba.backend=cuda needs the mamba-ssm kernels (`pip install mamba-ssm` on a "
            f"CUDA machine); use backend=chunked or mambapy otherwise ({err})"
        ) from err
    if not x.is_cuda:
        raise RuntimeError(
            "model.transformer.mamba.backend=cuda runs on CUDA tensors only; the input is on " + str(x.device)
        )
    y = selective_scan_fn(
        x.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A.float().contiguous(),
        Bm.transpose(1, 2).contiguous(),
        Cm.transpose(1, 2).contiguous(),
        D.float(),
        z=None,
        delta_bias=None,
        delta_softplus=False,
    )
    return y.transpose(1, 2).to(x.dtype)


def selective_scan(x, delta, A, Bm, Cm, D, backend: str = "chunked", chunk: int = 0) -> torch.Tensor:
    """y (B, L, E) of the selective scan with the named backend."""
    if backend == "chunked":
        return scan_chunked(x, delta, A, Bm, Cm, D, chunk=chunk)
    if backend == "loop":
        return scan_loop(x, delta, A, Bm, Cm, D)
    if backend == "mambapy":
        return scan_mambapy(x, delta, A, Bm, Cm, D)
    if backend == "cuda":
        return scan_cuda(x, delta, A, Bm, Cm, D)
    raise ValueError(f"mamba backend must be one of {BACKENDS}, got {backend!r}")


def softplus_delta(dt: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """delta = softplus(dt + bias) in fp32 (B, L, E)."""
    return F.softplus(dt.float() + bias.float())


__all__ = [
    "BACKENDS",
    "selective_scan",
    "scan_loop",
    "scan_chunked",
    "scan_chunked_differentiable",
    "scan_chunked_inplace",
    "scan_mambapy",
    "scan_cuda",
    "softplus_delta",
]
