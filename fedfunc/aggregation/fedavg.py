"""FedAvg (McMahan et al. 2017): the sample-weighted mean of the silos' models, streamed."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from fedfunc.aggregation.base import ClientUpdate, Strategy

# Elements per chunk: the float64 scratch is 8 MB whatever the model size, and stays in cache.
CHUNK = 1 << 20


class FedAvg(Strategy):
    """Weighted mean of the updates by ``num_samples``, consuming one update at a time.

    The accumulator is float64: updates arrive in whatever order Event Grid delivers them, and a
    float32 running sum rounds at every addition (~1e-7 relative each, growing with the number of
    silos), so the aggregate would depend on arrival order. In float64 those rounding errors sit
    ~9 digits below float32 resolution, so the result cast back to float32 is, in practice, the same
    whatever the order (tested bit-for-bit). Memory: one float64 accumulator (2× a float32 model), an
    8 MB scratch, and the one update being read — O(model), not O(silos × model).
    """

    name = "fedavg"

    def aggregate(self, global_arrays: Mapping[str, np.ndarray],
                  updates: Iterable[ClientUpdate]) -> dict[str, np.ndarray]:
        acc = {k: np.zeros(np.shape(a), dtype=np.float64) for k, a in global_arrays.items()}
        scratch = np.empty(CHUNK, dtype=np.float64)
        total = 0
        count = 0
        # No enumerate(): it caches its last (index, item) tuple, keeping the previous update alive
        # while the next one is read. ``del`` drops ours for the same reason.
        for update in updates:
            count += 1
            total += _accumulate(acc, update, count, scratch)
            del update
        if total == 0:
            raise ValueError("FedAvg needs at least one update")
        # pop: each float64 sum is freed as soon as its mean is cast, so the peak stays at the accumulator.
        return {k: _mean(acc.pop(k), total, global_arrays[k].dtype) for k in list(acc)}


def _accumulate(acc: dict[str, np.ndarray], update: ClientUpdate, count: int, scratch: np.ndarray) -> int:
    """acc += num_samples · update, tensor by tensor; returns num_samples. Names and shapes must match."""
    n = int(update.num_samples)
    if n < 1:
        raise ValueError(f"update {count}: num_samples={n} must be a positive integer")
    if update.arrays.keys() != acc.keys():
        diff = sorted(update.arrays.keys() ^ acc.keys())
        raise ValueError(f"update {count}: tensor names differ from the global model: {diff[:5]}")
    for name, a in update.arrays.items():
        if np.shape(a) != acc[name].shape:
            raise ValueError(f"update {count}: tensor {name!r} has shape {np.shape(a)}, "
                             f"the global model {acc[name].shape}")
        _add_scaled(acc[name].reshape(-1), np.asarray(a).reshape(-1), n, scratch)
    return n


def _add_scaled(acc: np.ndarray, a: np.ndarray, n: int, scratch: np.ndarray) -> None:
    """acc += n · a in float64, chunk by chunk so the only temporary is ``scratch``."""
    for start in range(0, a.size, CHUNK):
        part = scratch[: min(CHUNK, a.size - start)]
        np.multiply(a[start:start + CHUNK], n, out=part, dtype=np.float64)
        acc[start:start + CHUNK] += part


def _mean(weighted_sum: np.ndarray, total: int, dtype: np.dtype) -> np.ndarray:
    """Sum / total in the model's dtype; integer buffers (e.g. step counters) are rounded, not truncated."""
    mean = np.divide(weighted_sum, total, out=weighted_sum)
    return (np.rint(mean, out=mean) if np.issubdtype(dtype, np.integer) else mean).astype(dtype)
