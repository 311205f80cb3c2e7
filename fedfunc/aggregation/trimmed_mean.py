"""Coordinate-wise trimmed mean (Yin et al., ICML 2018), as Flower's ``FedTrimmedAvg``.

At each coordinate, drop the ``int(β·n)`` smallest and largest of the n updates' values and average
the rest, unweighted (``num_samples`` is ignored: a silo cannot buy weight by claiming samples).
β = 0.2 by default, 0 ≤ β < 0.5. A round needs enough updates for at least one value to be cut at
each end when β > 0 (n ≥ the smallest n with int(β·n) ≥ 1), otherwise it would be a plain mean.

Needs every update in the clear at each coordinate: ``needs_individual_updates = True`` — cannot run
under secure aggregation. Reads the source block-wise (all updates' block i, then block i + 1):
memory is the new model plus n blocks. Each coordinate's values are sorted and the kept ones summed
in sorted order (float64), so the result depends only on the set of updates, not their order.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from fedfunc import kernels
from fedfunc.aggregation.base import Options, Strategy, TooFewUpdates, stacked, store

class SortedMiddle(Strategy):
    """Coordinate-wise mean of the ranks ``lo:hi`` of the sorted values (trimmed mean, median)."""

    needs_individual_updates = True

    def _ranks(self, n: int) -> tuple[int, int]:
        raise NotImplementedError

    def _aggregate(self, global_arrays, updates, state, blocks):
        lo, hi = self._ranks(len(updates))
        out = {k: np.empty_like(np.asarray(g)) for k, g in global_arrays.items()}
        result = np.empty(blocks.block_elems, dtype=np.float64)
        for name, start, _, _, parts in blocks():
            for begin, end, rows in stacked(parts):
                kernels.sorted_middle_mean(rows, lo, hi, result[: end - begin])
                store(out[name], start + begin, start + end, result[: end - begin])
        return out, state, [u.key for u in updates]


class TrimmedMeanOptions(Options):
    beta: float = Field(0.2, ge=0, lt=0.5, description="fraction cut at each end of every coordinate")


class TrimmedMean(SortedMiddle):
    name = "trimmed_mean"
    Options = TrimmedMeanOptions

    def _ranks(self, n):
        cut = int(self.options.beta * n)
        return cut, n - cut

    def min_updates(self):
        beta = self.options.beta
        if beta == 0:
            return 1
        n = max(1, math.floor(1 / beta) - 1)
        while int(beta * n) < 1:
            n += 1
        return n

    def check_count(self, n):
        if n < self.min_updates():
            raise TooFewUpdates(self.name, n, self.min_updates(),
                                f"beta={self.options.beta} cuts int(beta·n) values at each end; fewer cut none")
