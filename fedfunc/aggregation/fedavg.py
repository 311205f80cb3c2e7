"""FedAvg (McMahan et al. 2017): the sample-weighted mean of the silos' models — and the base of
the FedAvg family (FedAvgM, FedAdam/FedYogi/FedAdagrad, FedProx), which post-process that mean.

Works under secure aggregation (it needs only the weighted sum): ``needs_individual_updates = False``.

Order-free by construction: each block of the mean is summed in float64 over the updates in key
order (four updates per pass over a cache-resident accumulator: ``kernels.accumulate``), so the same
set of updates gives the same bits whatever order they arrived in, on any machine. Memory: the new
model, one float64 block, and one block per update (none for in-memory updates, which are views).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from fedfunc import kernels
from fedfunc.aggregation.base import Strategy, store
from fedfunc.aggregation.sources import BlockUpdate
from fedfunc.aggregation.state import State


class FedAvg(Strategy):
    name = "fedavg"

    def _aggregate(self, global_arrays, updates, state, blocks):
        new_state = self._next_state(global_arrays, state)
        out = {k: np.empty_like(np.asarray(g)) for k, g in global_arrays.items()}
        for name, start, stop, g, mean in weighted_mean(blocks(), updates, blocks.block_elems):
            if np.issubdtype(out[name].dtype, np.floating):
                self._step(name, start, stop, mean, g, state, new_state)
            store(out[name], start, stop, mean)
        return out, new_state, [u.key for u in updates]

    def _next_state(self, global_arrays: Mapping[str, np.ndarray], state: State) -> State:
        """The state the blocks of this round fill in (FedAvg keeps none)."""
        return State()

    def _step(self, name: str, start: int, stop: int, mean: np.ndarray, g: np.ndarray, state: State,
              new_state: State) -> None:
        """Turn the float64 ``mean`` block into the new global block, in place (server optimizers)."""


def weighted_mean(blocks: Iterable[tuple[str, int, int, np.ndarray, list[np.ndarray]]], updates: list[BlockUpdate],
                  block_elems: int) -> Iterator[tuple[str, int, int, np.ndarray, np.ndarray]]:
    """(tensor, start, stop, global block, float64 mean block) for each block of the pass: Σ nᵢ·uᵢ / Σ nᵢ
    in the updates' order. The mean block is a reused buffer: consume it before the next one."""
    weights = [_positive_samples(u) for u in updates]
    total = float(sum(weights))
    acc = np.empty(block_elems, dtype=np.float64)
    for name, start, stop, g, parts in blocks:
        mean = acc[: stop - start]
        mean[...] = 0.0
        kernels.accumulate(mean, parts, weights)
        mean /= total
        yield name, start, stop, g, mean


def _positive_samples(update: BlockUpdate) -> int:
    n = int(update.num_samples)
    if n < 1:
        raise ValueError(f"update {update.key!r}: num_samples={n} must be a positive integer")
    return n

