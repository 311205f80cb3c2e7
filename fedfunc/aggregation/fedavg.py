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
from fedfunc.aggregation.base import BLOCK_ELEMS, ClientUpdate, Strategy, store
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

    def aggregate(self, global_arrays: Mapping[str, np.ndarray],
                  updates: Iterable[ClientUpdate]) -> dict[str, np.ndarray]:
        """Streaming FedAvg for a one-pass iterable (today's round): one update alive at a time,
        a model-size float64 accumulator (memory: 2× + the update being read). Summed in arrival
        order: float64 keeps the float32 result order-free in practice (the sum is exact unless one
        coordinate's values span more than ~2^(29 − log2 weight) in magnitude), while
        ``aggregate_round`` over a re-readable source is order-free by construction."""
        acc = {k: np.zeros(np.size(a), dtype=np.float64) for k, a in global_arrays.items()}
        shapes = {k: np.shape(a) for k, a in global_arrays.items()}
        total = 0
        count = 0
        # No enumerate(): it caches its last (index, item) tuple, keeping the previous update alive
        # while the next one is read. ``del`` drops ours for the same reason.
        for update in updates:
            count += 1
            n = _positive_samples(update, f"update {count}")
            if update.arrays.keys() != acc.keys():
                diff = sorted(update.arrays.keys() ^ acc.keys())
                raise ValueError(f"update {count}: tensor names differ from the global model: {diff[:5]}")
            for name, a in update.arrays.items():
                if np.shape(a) != shapes[name]:
                    raise ValueError(f"update {count}: tensor {name!r} has shape {np.shape(a)}, "
                                     f"the global model {shapes[name]}")
                flat = kernels.compilable(np.asarray(a).reshape(-1))
                for start in range(0, flat.size, BLOCK_ELEMS):
                    kernels.accumulate(acc[name][start:start + BLOCK_ELEMS], [flat[start:start + BLOCK_ELEMS]], [n])
            total += n
            del update
        if total == 0:
            raise ValueError("FedAvg needs at least one update")
        out = {}
        for name in list(acc):  # pop: each float64 sum is freed as soon as its mean is stored
            mean = acc.pop(name)
            mean /= total
            out[name] = np.empty(shapes[name], dtype=np.asarray(global_arrays[name]).dtype)
            store(out[name], 0, mean.size, mean)
        return out


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


def _positive_samples(update: BlockUpdate | ClientUpdate, what: str | None = None) -> int:
    n = int(update.num_samples)
    if n < 1:
        raise ValueError(f"{what or 'update ' + repr(update.key)}: num_samples={n} must be a positive integer")
    return n

