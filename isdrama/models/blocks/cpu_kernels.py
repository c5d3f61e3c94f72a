"""Fused CPU kernels of the Mamba layer (``csrc/mamba_inner.c``), for sampling and training.

- Sampling (no autograd): the Mamba layers (:func:`isdrama.models.blocks.mamba.mamba_lines_fused`)
  run on their lines packed without padding (:class:`PackedLines`), both directions of a
  bidirectional layer from one input projection, the backward one read backwards in place of
  flipped copies, through two kernels instead of a dozen PyTorch passes: :func:`conv_silu_lines`
  (the causal depthwise convolution, silu) and :func:`scan_lines` (softplus of delta, the
  selective scan with each line's state kept in the cache instead of (B, L, E, N) tensors in
  memory, the D term and the silu gate). :func:`scan_fused_cpu` is the same scan over padded
  lines (the chunked backend without autograd): 8-19x faster than its in-place PyTorch form.
- Training (autograd): :func:`scan_fused_train`, the scan with a fused backward
  (:class:`FusedScanFunction`: the forward keeps the state entering every 32-frame chunk, the
  backward recomputes each chunk and runs the adjoint recurrence): 8-20x faster than the
  differentiable chunked form, no (B, L, E, N) tensor stored.
Numbers: docs/benchmarks.md ("Scan backends").

The C source is compiled once per machine on first use with the system C compiler (``$CC``,
else ``cc``: OpenMP, ``-ffast-math`` at compile time only so glibc's vector ``expf`` is used and
no flush-to-zero start-up code is linked into the process, ``-mavx2 -mfma`` where torch reports
AVX2) into ``$ISDRAMA_KERNEL_CACHE`` (default ``~/.cache/isdrama/kernels``), named by a hash of
source, flags and compiler, written atomically, and loaded with ctypes. Where it cannot be built
(no compiler, no OpenMP) a warning says why once and the PyTorch path runs (the chunked scan's
in-place / differentiable forms); ``ISDRAMA_CPU_KERNELS=0`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "mamba_inner.c"
_state: dict[str, object] = {}


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept (``$ISDRAMA_KERNEL_CACHE`` or ``~/.cache/isdrama/kernels``)."""
    given = os.environ.get("ISDRAMA_KERNEL_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "isdrama" / "kernels"


def compile_flags() -> list[str]:
    """Compiler flags for this machine: AVX2 + FMA where torch runs its AVX2 kernels (so a run
    with ``ATEN_CPU_CAPABILITY=default`` builds the portable SSE2 variant)."""
    flags = ["-O3", "-fPIC", "-fopenmp", "-ffast-math", "-std=c11"]
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _compiler() -> str:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH (set CC)")
    return cc


def build_kernel() -> Path:
    """Compile the kernel (if this source/flags/compiler has not been built here) -> its .so path."""
    cc = _compiler()
    flags = compile_flags()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = hashlib.sha1("\0".join([SOURCE.read_text(), *flags, cc, *version]).encode()).hexdigest()[:16]
    out_dir = kernel_cache_dir()
    lib = out_dir / f"mamba_inner-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        obj, so = Path(tmp) / "scan.o", Path(tmp) / "scan.so"
        # two steps: -ffast-math at link time would add crtfastmath.o (flush-to-zero for the process)
        for cmd in (
            [cc, *flags, "-c", str(SOURCE), "-o", str(obj)],
            [cc, "-shared", "-fopenmp", str(obj), "-o", str(so), "-lm", *(["-lmvec"] if _has_libmvec(cc) else [])],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()}")
        os.replace(so, lib)  # atomic: concurrent builders (DDP ranks) each write a whole file
    return lib


def _has_libmvec(cc: str) -> bool:
    done = subprocess.run([cc, "-print-file-name=libmvec.so"], capture_output=True, text=True)
    return done.returncode == 0 and os.path.isabs(done.stdout.strip())


def load_kernel() -> Optional[ctypes.CDLL]:
    """The loaded kernel, or None (turned off, or it cannot be built: warned once with the reason)."""
    if "lib" in _state:
        return _state["lib"]  # type: ignore[return-value]
    lib = None
    if os.environ.get("ISDRAMA_CPU_KERNELS", "1") == "0":
        log.info("ISDRAMA_CPU_KERNELS=0: the fused CPU kernels are off, the Mamba layers run their PyTorch path")
    else:
        try:
            lib = ctypes.CDLL(str(build_kernel()))
            P, I64 = ctypes.c_void_p, ctypes.c_int64
            lib.isdrama_selective_scan.restype = None
            lib.isdrama_selective_scan.argtypes = (
                [P, I64, P, I64, P, P, P, I64, P, I64, P, P, I64, P, P] + [I64] * 4 + [ctypes.c_int]
            )
            lib.isdrama_selective_scan_lines.restype = None
            lib.isdrama_selective_scan_lines.argtypes = (
                [P, I64, P, I64, P, P, P, I64, P, I64, P, P, I64, P, I64, P, P] + [I64] * 3 + [ctypes.c_int] * 2
            )
            lib.isdrama_conv_silu_lines.restype = None
            lib.isdrama_conv_silu_lines.argtypes = [P, I64, P, P, P, P, P] + [I64] * 3 + [ctypes.c_int] * 2
            lib.isdrama_scan_train_backward.restype = None
            lib.isdrama_scan_train_backward.argtypes = [P] * 14 + [I64] * 4 + [ctypes.c_int]
        except (OSError, RuntimeError, AttributeError) as err:
            log.warning("the fused CPU kernels of the Mamba layer are unavailable, it runs its PyTorch path: %s", err)
            lib = None
    _state["lib"] = lib
    return lib


def fused_kernels_available() -> bool:
    return load_kernel() is not None


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, L, F) float32 with unit stride along F and rows b L + t evenly strided, and that stride
    (views of one projection's output pass as they are; anything else is copied)."""
    t = t.detach().float()
    if t.stride(-1) != 1 or t.stride(0) != t.shape[1] * t.stride(1):
        t = t.contiguous()
    return t, t.stride(1)


def _kernel(x: torch.Tensor) -> ctypes.CDLL:
    lib = load_kernel()
    if lib is None:
        raise RuntimeError("the fused CPU kernels are unavailable (see the warning logged, or ISDRAMA_CPU_KERNELS)")
    if x.device.type != "cpu":
        raise RuntimeError(f"the fused kernels run on CPU tensors, got {x.device}")
    return lib


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _scan_parameters(A, D, delta_bias) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The scan kernels' float32 layout of the layer's parameters: At (N, E) (A transposed), D (E,),
    the delta bias (E,) or None."""
    bias = None if delta_bias is None else delta_bias.detach().float().contiguous()
    return A.detach().float().t().contiguous(), D.detach().float().contiguous(), bias


def _scan(x, delta, A, Bm, Cm, D, delta_bias=None, z=None, hc=None) -> torch.Tensor:
    """The C scan's float32 y (B, L, E); ``hc`` (B, ceil(L / 32), N, E), when given, receives the
    chunk-entry states (training)."""
    lib = _kernel(x)
    Bsz, L, E = x.shape
    N = A.shape[-1]
    (xf, xs), (df, ds), (Bf, bs), (Cf, cs) = (_rows(t) for t in (x, delta, Bm, Cm))
    zf, zs = _rows(z) if z is not None else (None, 0)
    At, Df, bias = _scan_parameters(A, D, delta_bias)
    y = torch.empty(Bsz, L, E, dtype=torch.float32)
    lib.isdrama_selective_scan(
        xf.data_ptr(), xs, df.data_ptr(), ds, _ptr(bias), At.data_ptr(), Bf.data_ptr(), bs, Cf.data_ptr(), cs,
        Df.data_ptr(), _ptr(zf), zs, y.data_ptr(), _ptr(hc), Bsz, L, E, N, torch.get_num_threads(),
    )  # fmt: skip
    return y


def scan_fused_cpu(x, delta, A, Bm, Cm, D, delta_bias=None, z=None) -> torch.Tensor:
    """The selective scan's y (B, L, E) by the fused kernel (CPU, no autograd; shapes as
    :func:`isdrama.models.blocks.scan.selective_scan`). With ``delta_bias`` (E,), ``delta`` is
    before the softplus: delta = softplus(delta + delta_bias); with ``z`` (B, L, E), y is gated:
    y * silu(z). Raises where the kernels are unavailable."""
    return _scan(x, delta, A, Bm, Cm, D, delta_bias, z).to(x.dtype)


class PackedLines:
    """Lines packed without padding: line s is rows ``starts[s] .. starts[s] + lengths[s] - 1`` of
    an (R, F) tensor; ``index`` (R,) the rows of the padded (B L, F) layout they came from (None:
    no padding, the layout is the padded one)."""

    def __init__(self, mask: Optional[torch.Tensor], batch: int, length: int):
        if mask is None:
            self.lengths = torch.full((batch,), length, dtype=torch.int64)
            self.index = None
        else:  # pads on the right, as everywhere in the model (flip_valid assumes so too)
            mask = mask.cpu()
            self.lengths = mask.sum(1, dtype=torch.int64)
            self.index = None if bool(mask.all()) else mask.reshape(-1).nonzero().squeeze(1)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths
        self.rows = int(self.lengths.sum())
        self.batch, self.length = batch, length

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, F) -> (R, F)."""
        flat = x.reshape(self.batch * self.length, *x.shape[2:])
        return flat if self.index is None else flat.index_select(0, self.index)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """(R, F) -> (B, L, F), zero on padded frames."""
        if self.index is None:
            return rows.reshape(self.batch, self.length, *rows.shape[1:])
        full = rows.new_zeros(self.batch * self.length, *rows.shape[1:])
        return full.index_copy_(0, self.index, rows).view(self.batch, self.length, *rows.shape[1:])


def _lines_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(R, F) float32 with unit stride along F (views of one projection's output pass), its row stride."""
    t = t.detach().float()
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t, t.stride(0)


def conv_silu_lines(x, weight, bias, lines: PackedLines, reverse: bool = False) -> torch.Tensor:
    """silu(causal depthwise conv) of each packed line of x (R, E), read backwards when ``reverse``
    -> (R, E) float32, by the fused kernel (CPU, no autograd). weight (E, 1, K), bias (E,) of ``conv1d``."""
    lib = _kernel(x)
    R, E = x.shape
    xf, xs = _lines_rows(x)
    Wt = weight.detach().float()[:, 0, :].t().contiguous()  # (K, E)
    b = bias.detach().float().contiguous()
    out = torch.empty(R, E, dtype=torch.float32)
    lib.isdrama_conv_silu_lines(
        xf.data_ptr(), xs, Wt.data_ptr(), b.data_ptr(), out.data_ptr(), lines.starts.data_ptr(),
        lines.lengths.data_ptr(), lines.batch, E, Wt.shape[0], int(reverse), torch.get_num_threads(),
    )  # fmt: skip
    return out


def scan_lines(x, delta, A, Bm, Cm, D, delta_bias, z, lines: PackedLines, out: torch.Tensor, reverse: bool = False):
    """The gated selective scan (as :func:`scan_fused_cpu`) of each packed line, read backwards
    when ``reverse``: x, delta, z (R, E), Bm, Cm (R, N); writes y (R, E) into ``out``, a float32
    (R, E) view with unit stride along E (e.g. one half of an (R, 2E) buffer)."""
    lib = _kernel(x)
    R, E = x.shape
    N = A.shape[-1]
    if out.dtype != torch.float32 or out.shape != (R, E) or out.stride(-1) != 1:
        raise ValueError(f"out must be a float32 ({R}, {E}) view with unit stride along E, got {out.shape}")
    (xf, xs), (df, ds), (Bf, bs), (Cf, cs), (zf, zs) = (_lines_rows(t) for t in (x, delta, Bm, Cm, z))
    At, Df, bias = _scan_parameters(A, D, delta_bias)
    lib.isdrama_selective_scan_lines(
        xf.data_ptr(), xs, df.data_ptr(), ds, bias.data_ptr(), At.data_ptr(), Bf.data_ptr(), bs, Cf.data_ptr(), cs,
        Df.data_ptr(), zf.data_ptr(), zs, out.data_ptr(), out.stride(0), lines.starts.data_ptr(),
        lines.lengths.data_ptr(), lines.batch, E, N, int(reverse), torch.get_num_threads(),
    )  # fmt: skip
    return out


#: frames per chunk whose entering state the training forward keeps (CK in the C source)
TRAIN_CHUNK = 32
#: channels per work item (EB in the C source)
CHANNEL_BLOCK = 64


class FusedScanFunction(torch.autograd.Function):
    """The selective scan with a fused backward (training on CPU): the forward keeps only the state
    entering every chunk of 32 frames, (B, L / 32, N, E); the backward recomputes each chunk's
    states from it and runs the adjoint recurrence backwards. No (B, L, E, N) tensor is stored."""

    @staticmethod
    def forward(ctx, x, delta, A, Bm, Cm, D):
        Bsz, L, E = x.shape
        N = A.shape[-1]
        # the backward kernel reads these contiguous, with A transposed
        xf, df, Bf, Cf, Df = (t.detach().float().contiguous() for t in (x, delta, Bm, Cm, D))
        At = A.detach().float().t().contiguous()
        hc = torch.empty(Bsz, -(-L // TRAIN_CHUNK), N, E, dtype=torch.float32)
        y = _scan(xf, df, A, Bf, Cf, Df, hc=hc)
        ctx.save_for_backward(xf, df, At, Bf, Cf, Df, hc)
        ctx.dtypes = tuple(t.dtype for t in (x, delta, A, Bm, Cm, D))
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        xf, df, At, Bf, Cf, Df, hc = ctx.saved_tensors
        lib = _kernel(xf)
        Bsz, L, E = xf.shape
        N = At.shape[0]
        nblk = -(-E // CHANNEL_BLOCK)
        dyf = dy.float().contiguous()
        dx, ddelta = torch.empty_like(xf), torch.empty_like(xf)
        dBp, dCp = torch.empty(nblk, Bsz, L, N), torch.empty(nblk, Bsz, L, N)
        dAp, dDp = torch.empty(Bsz, N, E), torch.empty(Bsz, E)
        lib.isdrama_scan_train_backward(
            *(t.data_ptr() for t in (xf, df, At, Bf, Cf, Df, hc, dyf, dx, ddelta, dBp, dCp, dAp, dDp)),
            Bsz, L, E, N, torch.get_num_threads(),
        )  # fmt: skip
        grads = (dx, ddelta, dAp.sum(0).t(), dBp.sum(0), dCp.sum(0), dDp.sum(0))
        return tuple(g.to(dtype) for g, dtype in zip(grads, ctx.dtypes))


def scan_fused_train(x, delta, A, Bm, Cm, D) -> torch.Tensor:
    """The selective scan's y (B, L, E) with autograd through the fused forward / backward kernels
    (CPU; shapes as :func:`isdrama.models.blocks.scan.selective_scan`)."""
    return FusedScanFunction.apply(x, delta, A, Bm, Cm, D)


__all__ = [
    "FusedScanFunction",
    "scan_fused_train",
    "build_kernel",
    "compile_flags",
    "PackedLines",
    "conv_silu_lines",
    "fused_kernels_available",
    "kernel_cache_dir",
    "load_kernel",
    "scan_fused_cpu",
    "scan_lines",
]
