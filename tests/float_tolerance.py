"""Tolerances derived from the arithmetic, for tests comparing two computations of one value.

Two float computations of the same quantity in different orders (batched vs one by one, another
thread split, other vector kernels, as other CPUs pick) agree only to rounding. The bounds here
are the textbook ones (Higham, Accuracy and Stability of Numerical Algorithms, ch. 4): a sum of n
terms of one sign computed in any order is within (n - 1) u of the exact sum, relative, with
u = eps / 2 the unit roundoff; so two orders differ by at most about n eps relative. Nested sums
add their term counts; a ratio of two such sums adds both. float32 eps = 1.19e-7, float64 2.2e-16.
"""

from __future__ import annotations

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)
F64_EPS = float(np.finfo(np.float64).eps)


def sum_order_rtol(n_terms: int, eps: float = F32_EPS) -> float:
    """Relative bound between two summation orders of ``n_terms`` same-sign terms (n eps)."""
    return n_terms * eps


def ulp(x: float, eps: float = F32_EPS) -> float:
    """Spacing of the floats next to |x| (eps times the power of 2 at or below |x|)."""
    return eps * 2.0 ** np.floor(np.log2(abs(x))) if x else 0.0


#: Per bin, a wrapped IPD error (isdrama.metrics.spatial, corrected mode) combines four atan2
#: phases (|phi| <= pi, each within 1 ulp on any code path: torch's vectorised atan2, its scalar
#: tail, numpy's) with six roundings at |x| <= 4 pi: two computations differ by at most
#: 4 x 2 ulp(pi) + 6 ulp(4 pi) = 32 ulp(pi) = 7.6e-6 rad, and so does any weighted mean of bins.
#: Also the bound on the IPD error of two identical signals (rounding noise only).
PHASE_ATOL = 32 * ulp(np.pi)
#: Per bin, an ILD error of two identical signals is 20 log10 of (|R_g| |L_h|) / (|L_g| |R_h|) for
#: equal exact magnitudes: four hypot results (within 1 ulp each on any path) and three roundings
#: make the ratio 1 within 7 u (u = eps / 2), so |ILD| <= 20 / ln 10 x 7 u = 3.6e-6 dB.
LEVEL_ATOL = 20 / np.log(10) * 7 * F32_EPS / 2


def corrected_spatial_rtol(frames: int, bins: int = 446, bands: int = 128) -> tuple[float, float]:
    """(per-pair, per-band) relative bounds between two float32 computations of corrected-mode
    IPD/ILD errors (isdrama.metrics.spatial): a band's error is a ratio of two sums of
    non-negative terms over ``frames`` x ``bins`` (446 STFT bins carry a mel weight), and the pair's
    error averages ``bands`` bands: 2 (frames + bins) eps per band, + bands eps per pair."""
    band = sum_order_rtol(2 * (frames + bins))
    return band + sum_order_rtol(bands), band
