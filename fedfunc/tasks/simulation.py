"""An in-process federated run (no Azure): partition, local training, the wire format, aggregation.

Used by the tests and benches to check that a task and a strategy reach their accuracy targets.
Every update goes through ``encode`` → ``validate_update`` exactly as a silo's blob would.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedfunc.aggregation import FedAvg, Strategy
from fedfunc.contracts import Hyperparams
from fedfunc.tasks.base import Task
from fedfunc.tasks.partition import partition
from fedfunc.weights import ModelManifest, ValidatedUpdate, encode, load_arrays_into, model_to_arrays, validate_update

# (global arrays, the round's validated updates) -> the next global arrays
Aggregate = Callable[[Mapping[str, np.ndarray], list[ValidatedUpdate]], dict[str, np.ndarray]]


def rounds_of(strategy: Strategy) -> Aggregate:
    """``strategy.aggregate_round`` as ``simulate``'s aggregate, carrying its state from round to round."""
    state = None

    def aggregate(global_arrays: Mapping[str, np.ndarray], updates: list[ValidatedUpdate]) -> dict[str, np.ndarray]:
        nonlocal state
        result = strategy.aggregate_round(global_arrays, updates,
                                          strategy.initial_state(global_arrays) if state is None else state)
        state = result.state
        return result.arrays
    return aggregate


def local_seed(seed: int, round_: int, silo: int) -> int:
    """A distinct, reproducible training seed per (run seed, round, silo)."""
    return int(np.random.SeedSequence([seed, round_, silo]).generate_state(1)[0])


def simulate(task: Task, *, n_silos: int, alpha: float | None, rounds: int, seed: int,
             hyperparams: Hyperparams | None = None, aggregate: Aggregate | None = None) -> list[dict]:
    """Run ``rounds`` FedAvg rounds (or ``aggregate``'s rule, e.g. ``rounds_of(strategy)``); one held-out
    evaluation per round."""
    data = task.load_dataset()
    parts = partition(data.y_train, n_silos, alpha=alpha, seed=seed)
    hp = hyperparams or task.default_hyperparams
    aggregate = aggregate or rounds_of(FedAvg())
    model = task.build_model(seed)
    global_arrays = model_to_arrays(model)
    manifest = ModelManifest.from_arrays(global_arrays)
    history = []

    def updates(round_: int) -> list[ValidatedUpdate]:
        out = []
        for i, idx in enumerate(parts):
            local = task.build_model(seed)
            load_arrays_into(local, global_arrays)
            fit = task.train(local, data.x_train[idx], data.y_train[idx], epochs=hp.epochs, lr=hp.lr,
                             batch_size=hp.batch_size, seed=local_seed(seed, round_, i))
            meta = {"run": "sim", "round": str(round_), "silo": f"silo{i}", "nonce": "sim",
                    "num_samples": str(fit["num_samples"])}
            blob = encode(model_to_arrays(local), meta)
            out.append(validate_update(blob, manifest, expected=meta))
        return out

    for round_ in range(1, rounds + 1):
        global_arrays = aggregate(global_arrays, updates(round_))
        load_arrays_into(model, global_arrays)
        history.append({"round": round_, **task.evaluate(model, data.x_test, data.y_test)})
    return history
