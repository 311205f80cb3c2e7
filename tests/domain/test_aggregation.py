"""The strategy registry and the FedAvg basics every strategy builds on (the rest: test_strategies.py)."""
from __future__ import annotations

import numpy as np
import pytest

from fedfunc.aggregation import FedAvg, MemoryUpdate, Strategy, TooFewUpdates, UnknownStrategy, get_strategy


def test_fedavg_weights_not_uniform():
    g = {"x": np.zeros(1, np.float32)}
    out = FedAvg().aggregate_round(g, [MemoryUpdate("a", 3, {"x": np.array([0.0], np.float32)}),
                                       MemoryUpdate("b", 1, {"x": np.array([4.0], np.float32)})]).arrays
    assert out["x"][0] == pytest.approx(1.0)


def test_fedavg_without_updates_or_with_a_bad_count_fails_clearly():
    g = {"x": np.zeros(1, np.float32)}
    with pytest.raises(TooFewUpdates, match="fedavg needs at least 1 updates .* got 0"):
        FedAvg().aggregate_round(g, [])
    with pytest.raises(ValueError, match="update 'a': num_samples=0"):
        FedAvg().aggregate_round(g, [MemoryUpdate("a", 0, {"x": np.zeros(1, np.float32)})])


def test_registry():
    assert isinstance(get_strategy("fedavg"), FedAvg)
    assert isinstance(get_strategy("FedAvg"), FedAvg)
    with pytest.raises(UnknownStrategy, match=r"unknown aggregation strategy 'krumm'; known: \['fedadagrad', "):
        get_strategy("krumm")


def test_default_configure_round_passes_hyperparams_through_as_a_copy():
    hp = {"lr": 0.1, "epochs": 2}
    out = Strategy().configure_round(4, hp)
    assert out == hp and out is not hp
