"""Coordinate-wise median (Yin et al., ICML 2018), as Flower's ``FedMedian`` (``np.median`` over the
updates: the mean of the two middle values for an even count). Unweighted; no options.

A round needs at least 3 updates (the median of 2 is their mean: nothing is outvoted). Needs every
update in the clear at each coordinate: ``needs_individual_updates = True`` — cannot run under
secure aggregation. Same block-wise, order-free computation as ``trimmed_mean``.
"""
from __future__ import annotations

from fedfunc.aggregation.base import TooFewUpdates
from fedfunc.aggregation.trimmed_mean import SortedMiddle


class Median(SortedMiddle):
    name = "median"

    def _ranks(self, n):
        return (n - 1) // 2, n // 2 + 1

    def min_updates(self):
        return 3

    def check_count(self, n):
        if n < 3:
            raise TooFewUpdates(self.name, n, 3, "the median of fewer than 3 values outvotes none")
