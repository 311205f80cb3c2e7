"""Compiled inner loops of aggregation (numba): the only code that touches every parameter.

Why compiled: numpy needs one pass per operation (convert, scale, add, check), each re-reading
memory; a fused loop reads each update byte once. Rules every kernel keeps:

- Results depend only on the values and on the order the caller passes them in, never on the
  machine: no ``fastmath`` where a result is kept (no FMA contraction, no reassociation), so a
  crash + replay on another host gives the same bits. Only the squared-norm reductions, whose value
  is compared to a bound and never stored in a model, may be reassociated (vectorised).
- Accumulators are float64; float32 × integer weight products are exact in float64 (24 + 29 bits).

Compiled on first use (numba is imported then, not when this module is: a silo job never pays for
it), per dtype, and cached on disk next to this file when that is writable.
"""
from __future__ import annotations

from collections.abc import Sequence

import functools
from types import SimpleNamespace

import numpy as np


def _acc1(acc, u0, w0):
    for i in range(acc.size):
        acc[i] += w0 * np.float64(u0[i])


def _acc2(acc, u0, u1, w0, w1):
    for i in range(acc.size):
        acc[i] += w0 * np.float64(u0[i]) + w1 * np.float64(u1[i])


def _acc4(acc, u0, u1, u2, u3, w0, w1, w2, w3):
    for i in range(acc.size):
        acc[i] += (w0 * np.float64(u0[i]) + w1 * np.float64(u1[i])) + (w2 * np.float64(u2[i]) + w3 * np.float64(u3[i]))


def accumulate(acc: np.ndarray, blocks: Sequence[np.ndarray], weights: Sequence[float]) -> None:
    """``acc += Σ weights[i] · blocks[i]`` (float64 ``acc``, 1-D blocks of its length).

    Four updates per pass over ``acc`` (then two, then one): the accumulator is loaded and stored
    once per four updates, which is what lets the kernel run at the speed updates are read. The
    grouping is fixed by the order given, so the same ordered input gives the same bits.
    """
    i, n = 0, len(blocks)
    while n - i >= 4:
        _jit().acc4(acc, blocks[i], blocks[i + 1], blocks[i + 2], blocks[i + 3],
              float(weights[i]), float(weights[i + 1]), float(weights[i + 2]), float(weights[i + 3]))
        i += 4
    if n - i >= 2:
        _jit().acc2(acc, blocks[i], blocks[i + 1], float(weights[i]), float(weights[i + 1]))
        i += 2
    if n - i == 1:
        _jit().acc1(acc, blocks[i], float(weights[i]))


def _sumsq_diff(u, g):
    total = 0.0
    for i in range(u.size):
        d = np.float64(u[i]) - np.float64(g[i])
        total += d * d
    return total


def _sumsq(u):
    total = 0.0
    for i in range(u.size):
        x = np.float64(u[i])
        total += x * x
    return total


def sumsq(u: np.ndarray, ref: np.ndarray | None = None) -> float:
    """‖u − ref‖² (‖u‖² without ``ref``) in float64, one pass. It is NaN or inf exactly when ``u``
    holds a NaN or inf (float32 squares cannot overflow float64), so it doubles as the finiteness
    check. Reassociated (vectorised): the last bits may differ between CPUs; it is only compared."""
    k = _jit()
    return float(k.sumsq(compilable(u)) if ref is None else k.sumsq_diff(compilable(u), compilable(ref)))


def compilable(a: np.ndarray) -> np.ndarray:
    """``a`` in a dtype the kernels compile for: float16 and bool (which numba lacks) widened to
    float32 and uint8 — a copy, for those rare tensors only."""
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return a.view(np.uint8) if a.dtype == np.bool_ else a


def _sorted_middle_mean(stack, lo, hi, out):
    n, m = stack.shape
    # Odd-even transposition sort of every column at once: n rounds of compare-exchanges between
    # neighbouring rows, each a branch-free min/max over whole rows (vectorised across columns).
    for p in range(n):
        for i in range(p % 2, n - 1, 2):
            a = stack[i]
            b = stack[i + 1]
            for j in range(m):
                x = a[j]
                y = b[j]
                a[j] = min(x, y)
                b[j] = max(x, y)
    for j in range(m):
        out[j] = 0.0  # +0.0: a sum of -0.0 and 0.0 ties is 0.0 whichever the sort put first
    for r in range(lo, hi):
        for j in range(m):
            out[j] += np.float64(stack[r, j])
    for j in range(m):
        out[j] /= hi - lo


def sorted_middle_mean(stack: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
    """Coordinate-wise mean of ranks ``lo:hi`` of ``stack`` (updates × coordinates, sorted in place
    along the updates) into float64 ``out``. The kept values are summed in sorted order, so the
    result depends only on the multiset of values at each coordinate, not on the rows' order."""
    _jit().sorted_middle_mean(stack, lo, hi, out)


def _pairwise_sq(stack, out):
    n = stack.shape[0]
    for a in range(n):
        for b in range(a + 1, n):
            # Four explicit partial sums: independent chains for the CPU, a fixed order for the result.
            s0 = s1 = s2 = s3 = 0.0
            m = stack.shape[1] - stack.shape[1] % 4
            for j in range(0, m, 4):
                d0 = np.float64(stack[a, j]) - np.float64(stack[b, j])
                d1 = np.float64(stack[a, j + 1]) - np.float64(stack[b, j + 1])
                d2 = np.float64(stack[a, j + 2]) - np.float64(stack[b, j + 2])
                d3 = np.float64(stack[a, j + 3]) - np.float64(stack[b, j + 3])
                s0 += d0 * d0
                s1 += d1 * d1
                s2 += d2 * d2
                s3 += d3 * d3
            for j in range(m, stack.shape[1]):
                d0 = np.float64(stack[a, j]) - np.float64(stack[b, j])
                s0 += d0 * d0
            total = (s0 + s1) + (s2 + s3)
            out[a, b] += total
            out[b, a] += total


def add_pairwise_sq(stack: np.ndarray, out: np.ndarray) -> None:
    """``out[a, b] += ‖stack[a] − stack[b]‖²`` for every pair (float64, not reassociated: Krum's
    choice must not depend on the CPU)."""
    _jit().pairwise_sq(stack, out)


@functools.cache
def _jit() -> SimpleNamespace:
    import numba

    plain = {"nogil": True, "cache": True}
    reassoc = {**plain, "fastmath": {"reassoc"}}  # squared norms only: compared to a bound, never stored
    return SimpleNamespace(
        acc1=numba.njit(**plain)(_acc1), acc2=numba.njit(**plain)(_acc2), acc4=numba.njit(**plain)(_acc4),
        sumsq=numba.njit(**reassoc)(_sumsq), sumsq_diff=numba.njit(**reassoc)(_sumsq_diff),
        sorted_middle_mean=numba.njit(**plain)(_sorted_middle_mean), pairwise_sq=numba.njit(**plain)(_pairwise_sq))


def warm(dtype=np.float32) -> None:
    """Import numba and compile (or load from the cache) the kernels every round uses for ``dtype``,
    ahead of the first round: the host calls it on a background thread when the app loads."""
    u, acc = np.zeros(8, dtype), np.zeros(8, np.float64)
    sumsq(u)
    sumsq(u, u)
    accumulate(acc, [u] * 7, [1.0] * 7)  # four, two and one at a time

