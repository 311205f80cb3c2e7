"""An in-process federated run (no Azure): partition, local training, the wire format, aggregation.

Used by the tests and benches to check that a task and a strategy reach their accuracy targets.
Every update goes through ``encode`` → ``validate_update`` exactly as a silo's blob would.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from fedfunc.aggregation import ClientUpdate, get_strategy
from fedfunc.contracts import Hyperparams
from fedfunc.tasks.base import Task
from fedfunc.tasks.partition import partition
from fedfunc.weights import ModelManifest, ValidatedUpdate, encode, load_arrays_into, model_to_arrays, validate_update

Aggregate = Callable[[Mapping[str, np.ndarray], Iterable[ClientUpdate]], dict[str, np.ndarray]]


def local_seed(seed: int, round_: int, silo: int) -> int:
    """A distinct, reproducible training seed per (run seed, round, silo)."""
    return int(np.random.SeedSequence([seed, round_, silo]).generate_state(1)[0])


def simulate(task: Task, *, n_silos: int, alpha: float | None, rounds: int, seed: int,
             hyperparams: Hyperparams | None = None, aggregate: Aggregate | None = None) -> list[dict]:
    """Run ``rounds`` FedAvg rounds (or ``aggregate``'s rule); one held-out evaluation per round."""
    data = task.load_dataset()
    parts = partition(data.y_train, n_silos, alpha=alpha, seed=seed)
    hp = hyperparams or task.default_hyperparams
    aggregate = aggregate or get_strategy("fedavg").aggregate
    model = task.build_model(seed)
    global_arrays = model_to_arrays(model)
    manifest = ModelManifest.from_arrays(global_arrays)
    history = []

    def updates(round_: int) -> Iterator[ValidatedUpdate]:
        for i, idx in enumerate(parts):
            local = task.build_model(seed)
            load_arrays_into(local, global_arrays)
            fit = task.train(local, data.x_train[idx], data.y_train[idx], epochs=hp.epochs, lr=hp.lr,
                             batch_size=hp.batch_size, seed=local_seed(seed, round_, i))
            meta = {"run": "sim", "round": str(round_), "silo": f"silo{i}", "nonce": "sim",
                    "num_samples": str(fit["num_samples"])}
            blob = encode(model_to_arrays(local), meta)
            yield validate_update(blob, manifest, expected=meta)

    for round_ in range(1, rounds + 1):
        global_arrays = aggregate(global_arrays, updates(round_))
        load_arrays_into(model, global_arrays)
        history.append({"round": round_, **task.evaluate(model, data.x_test, data.y_test)})
    return history
