"""The fused CPU selective-scan kernel (``csrc/selective_scan.c``): sampling's scan in one pass.

The chunked scan's forms (:mod:`isdrama.models.blocks.scan`) write state-sized tensors
(B, L, E, N) several times per layer; the fused kernel keeps each line's state in the cache and
reads only the (B, L, E) / (B, L, N) inputs, 5-10x faster without autograd (docs/benchmarks.md,
"Scan backends"). It has no backward: training keeps the differentiable chunked form.

The C source is compiled once per machine on first use with the system C compiler (``$CC``,
else ``cc``: OpenMP, ``-ffast-math`` at compile time only so glibc's vector ``expf`` is used and
no flush-to-zero start-up code is linked into the process, ``-mavx2 -mfma`` where torch reports
AVX2) into ``$ISDRAMA_KERNEL_CACHE`` (default ``~/.cache/isdrama/kernels``), named by a hash of
source, flags and compiler, written atomically, and loaded with ctypes. Where it cannot be built
(no compiler, no OpenMP) a warning says why once and the chunked scan's in-place form runs;
``ISDRAMA_FUSED_SCAN=0`` turns the kernel off.
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

SOURCE = Path(__file__).with_name("csrc") / "selective_scan.c"
_FUNCTION = "isdrama_selective_scan"
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
    lib = out_dir / f"selective_scan-{key}.so"
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
    if os.environ.get("ISDRAMA_FUSED_SCAN", "1") == "0":
        log.info("ISDRAMA_FUSED_SCAN=0: the fused CPU scan is off, sampling runs the chunked scan")
    else:
        try:
            lib = ctypes.CDLL(str(build_kernel()))
            fn = getattr(lib, _FUNCTION)
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 4 + [ctypes.c_int]
        except (OSError, RuntimeError, AttributeError) as err:
            log.warning("the fused CPU selective scan is unavailable, sampling runs the chunked scan: %s", err)
            lib = None
    _state["lib"] = lib
    return lib


def fused_scan_available() -> bool:
    return load_kernel() is not None


def scan_fused_cpu(x, delta, A, Bm, Cm, D) -> torch.Tensor:
    """The selective scan's y (B, L, E) by the fused kernel (CPU tensors, no autograd; shapes as
    :func:`isdrama.models.blocks.scan.selective_scan`); raises where the kernel is unavailable."""
    lib = load_kernel()
    if lib is None:
        raise RuntimeError("the fused CPU selective scan is unavailable (see the warning above, or ISDRAMA_FUSED_SCAN)")
    if x.device.type != "cpu":
        raise RuntimeError(f"the fused selective scan runs on CPU tensors, got {x.device}")
    Bsz, L, E = x.shape
    N = A.shape[-1]
    xf, df = x.detach().float().contiguous(), delta.detach().float().contiguous()
    At = A.detach().float().t().contiguous()
    Bf, Cf = Bm.detach().float().contiguous(), Cm.detach().float().contiguous()
    Df = D.detach().float().contiguous()
    y = torch.empty_like(xf)
    getattr(lib, _FUNCTION)(*(t.data_ptr() for t in (xf, df, At, Bf, Cf, Df, y)), Bsz, L, E, N, torch.get_num_threads())
    return y.to(x.dtype)


__all__ = ["build_kernel", "compile_flags", "fused_scan_available", "kernel_cache_dir", "load_kernel", "scan_fused_cpu"]
