"""Krum and multi-Krum (Blanchard et al., NeurIPS 2017), as Flower's ``Krum`` / ``MultiKrum``.

Each update's score is the sum of its squared distances to its n − f − 2 nearest other updates; the
``m`` lowest-scoring updates are kept (m = 1: Krum, the single update itself) and averaged weighted
by ``num_samples``. ``f`` is the number of Byzantine updates to tolerate, which needs n ≥ 2f + 3
(and m ≤ n − f); the edge checks that against the run's silo count, the round against the updates
it accepted. Ties in score go to the smaller key, so the choice never depends on arrival order.

Needs every update in the clear: ``needs_individual_updates = True`` — cannot run under secure
aggregation. Two block-wise passes over the source: the pairwise distances (an n × n float64 matrix,
summed exactly as written: no CPU-dependent reassociation), then the mean of the kept updates.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from fedfunc import kernels
from fedfunc.aggregation.base import Options, Strategy, TooFewUpdates, stacked, store
from fedfunc.aggregation.fedavg import weighted_mean


class KrumOptions(Options):
    f: int = Field(0, ge=0, description="Byzantine updates tolerated (Flower: num_malicious_nodes)")
    m: int = Field(1, ge=1, description="updates kept; 1 = Krum, more = multi-Krum (Flower: num_nodes_to_select)")


class Krum(Strategy):
    name = "krum"
    Options = KrumOptions
    needs_individual_updates = True

    def min_updates(self):
        return max(2 * self.options.f + 3, self.options.f + self.options.m)

    def check_count(self, n):
        f, m = self.options.f, self.options.m
        if n < 2 * f + 3:
            raise TooFewUpdates(self.name, n, 2 * f + 3, f"f={f} Byzantine updates need n ≥ 2f + 3")
        if n < f + m:
            raise TooFewUpdates(self.name, n, f + m, f"keeping m={m} of the n − f={n - f} trusted updates")

    def scores(self, distances: np.ndarray) -> np.ndarray:
        """Each update's sum of squared distances to its n − f − 2 nearest others."""
        n = len(distances)
        nearest = n - self.options.f - 2
        return np.array([np.sort(np.delete(distances[i], i))[:nearest].sum() for i in range(n)])

    def _aggregate(self, global_arrays, updates, state, blocks):
        n = len(updates)
        distances = np.zeros((n, n), dtype=np.float64)
        for _, _, _, _, parts in blocks():
            for _, _, rows in stacked(parts):
                kernels.add_pairwise_sq(rows, distances)
        scores = self.scores(distances)
        kept = sorted(sorted(range(n), key=lambda i: (scores[i], i))[: self.options.m])
        chosen = [updates[i] for i in kept]
        out = {k: np.empty_like(np.asarray(g)) for k, g in global_arrays.items()}
        for name, start, stop, _, mean in weighted_mean(blocks(chosen), chosen, blocks.block_elems):
            store(out[name], start, stop, mean)
        return out, state, [u.key for u in chosen]
