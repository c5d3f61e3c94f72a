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
