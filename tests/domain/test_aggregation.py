"""Streaming FedAvg (``FedAvg.aggregate`` over a one-pass iterable): weighting, memory, the registry."""
from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest

from fedfunc.aggregation import FedAvg, Strategy, UnknownStrategy, get_strategy


@dataclass(frozen=True)
class Update:
    arrays: dict
    num_samples: int


def random_updates(n, shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [Update({k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}, int(rng.integers(1, 500)))
            for _ in range(n)]


def test_fedavg_equals_weighted_mean_computed_directly():
    shapes = {"w": (5, 4), "b": (4,)}
    updates = random_updates(7, shapes)
    global_arrays = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    out = FedAvg().aggregate(global_arrays, iter(updates))
    weights = np.array([u.num_samples for u in updates], np.float64)
    for k in shapes:
        stacked = np.stack([u.arrays[k].astype(np.float64) for u in updates])
        expected = np.tensordot(weights / weights.sum(), stacked, axes=1)
        assert out[k].dtype == np.float32 and out[k].shape == shapes[k]
        np.testing.assert_allclose(out[k], expected, rtol=1e-6, atol=1e-7)


def test_fedavg_weights_not_uniform():
    g = {"x": np.zeros(1, np.float32)}
    out = FedAvg().aggregate(g, [Update({"x": np.array([0.0], np.float32)}, 3),
                                 Update({"x": np.array([4.0], np.float32)}, 1)])
    assert out["x"][0] == pytest.approx(1.0)


def test_fedavg_is_order_independent():
    shapes = {"w": (50, 20)}
    updates = random_updates(9, shapes, seed=3)
    g = {"w": np.zeros((50, 20), np.float32)}
    a = FedAvg().aggregate(g, updates)
    b = FedAvg().aggregate(g, updates[::-1])
    np.testing.assert_array_equal(a["w"], b["w"])


def test_integer_buffers_are_rounded_back_to_their_dtype():
    g = {"steps": np.array(0, np.int64)}
    out = FedAvg().aggregate(g, [Update({"steps": np.array(2, np.int64)}, 1),
                                 Update({"steps": np.array(3, np.int64)}, 2)])
    assert out["steps"].dtype == np.int64 and out["steps"] == 3  # 8/3 = 2.67 → 3


def test_fedavg_consumes_a_generator_once_and_in_order():
    seen = []

    def gen():
        for i in range(4):
            seen.append(i)
            yield Update({"x": np.full(2, i, np.float32)}, 1)

    out = FedAvg().aggregate({"x": np.zeros(2, np.float32)}, gen())
    assert seen == [0, 1, 2, 3]
    np.testing.assert_allclose(out["x"], 1.5)


def test_fedavg_without_updates_fails_clearly():
    with pytest.raises(ValueError, match="at least one update"):
        FedAvg().aggregate({"x": np.zeros(1, np.float32)}, [])


def test_fedavg_refuses_mismatched_names_shapes_and_bad_counts():
    g = {"x": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="tensor names differ.*'y'"):
        FedAvg().aggregate(g, [Update({"x": np.zeros(1, np.float32), "y": np.zeros(1, np.float32)}, 1)])
    with pytest.raises(ValueError, match=r"tensor 'x' has shape \(2,\)"):
        FedAvg().aggregate(g, [Update({"x": np.zeros(2, np.float32)}, 1)])
    with pytest.raises(ValueError, match="num_samples=0"):
        FedAvg().aggregate(g, [Update({"x": np.zeros(1, np.float32)}, 0)])


def _peak_bytes(n_updates: int, size: int) -> int:
    """Peak traced memory while aggregating ``n_updates`` generated one at a time."""
    g = {"w": np.zeros(size, np.float32)}

    def gen():
        for i in range(n_updates):
            yield Update({"w": np.full(size, float(i), np.float32)}, i + 1)

    tracemalloc.start()
    try:
        FedAvg().aggregate(g, gen())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_update_count():
    size = 1_000_000  # 4 MB per float32 update
    peak2, peak8 = _peak_bytes(2, size), _peak_bytes(8, size)
    # Six more updates must not add even half an update's bytes (holding them would add 24 MB).
    assert peak8 - peak2 < size * 4 / 2, (peak2, peak8)
    # And at most one update is alive at a time: float64 accumulator + one update + the result (+ slack).
    assert peak8 < size * 8 + 2.5 * size * 4, peak8


def test_registry():
    assert isinstance(get_strategy("fedavg"), FedAvg)
    assert isinstance(get_strategy("FedAvg"), FedAvg)
    with pytest.raises(UnknownStrategy, match=r"unknown aggregation strategy 'krumm'; known: \['fedadagrad', "):
        get_strategy("krumm")


def test_default_configure_round_passes_hyperparams_through_as_a_copy():
    hp = {"lr": 0.1, "epochs": 2}
    out = Strategy().configure_round(4, hp)
    assert out == hp and out is not hp
