"""In-process federated runs (no stack, no storage): ``fedfunc task try``, and the reference the tests and
benches compare the real system with.

Each silo's data is read through the same ``DataReader`` a silo job gets; every update crosses the wire
format (``encode`` → ``validate_update``) as a silo's blob would; evaluation pools each silo's test-part
figures exactly as the orchestrator pools them. ``history[k]`` holds the pooled test figures of the model
after k rounds (k = 0: the initial model).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from fedfunc.aggregation import ClientUpdate, get_strategy
from fedfunc.evaluation import EvalFigures, pool
from fedfunc.tasks import loop
from fedfunc.tasks.api import Task
from fedfunc.tasks.data import DataReader, DataSource
from fedfunc.tasks.loader import build_model, load_weights
from fedfunc.weights import ModelManifest, ValidatedUpdate, encode, model_to_arrays, validate_update

Aggregate = Callable[[Mapping[str, np.ndarray], Iterable[ClientUpdate]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class LocalSilo:
    """A silo's data for one task, as its job would read it."""

    name: str
    train: DataReader
    test: DataReader

    @classmethod
    def of(cls, name: str, source: DataSource, task_prefix: str = "", label: str | None = None) -> LocalSilo:
        """``{task_prefix}train/`` and ``{task_prefix}test/`` of ``source``."""
        return cls(name, *(DataReader(source, f"{task_prefix}{part}/", f"{label or name}/{task_prefix}{part}/")
                           for part in ("train", "test")))


def local_seed(seed: int, round_: int, silo: int) -> int:
    """A distinct, reproducible training seed per (run seed, round, silo)."""
    return int(np.random.SeedSequence([seed, round_, silo]).generate_state(1)[0])


def _model(task: Task, arrays: Mapping[str, np.ndarray]):
    model = build_model(task)
    load_weights(model, arrays)
    return model


def pooled_figures(task: Task, arrays: Mapping[str, np.ndarray], tests: Sequence[Dataset]) -> EvalFigures:
    model = _model(task, arrays)
    return pool((loop.evaluate(task, model, t) for t in tests), task.num_classes)


def simulate(task: Task, initial: Mapping[str, np.ndarray], silos: Sequence[LocalSilo], *, rounds: int,
             seed: int = 0, aggregate: Aggregate | None = None,
             on_round: Callable[[int, dict], None] | None = None) -> list[dict]:
    """``rounds`` FedAvg rounds (or ``aggregate``'s rule) over ``silos``; pooled test figures per round."""
    data = [(task.read_data(s.train), task.read_data(s.test)) for s in silos]
    aggregate = aggregate or get_strategy("fedavg").aggregate
    global_arrays = dict(initial)
    manifest = ModelManifest.from_arrays(global_arrays)

    def updates(round_: int) -> Iterator[ValidatedUpdate]:
        for i, (train, _) in enumerate(data):
            model = _model(task, global_arrays)
            stats = loop.train(task, model, train, seed=local_seed(seed, round_, i))
            meta = {"run": "sim", "round": str(round_), "silo": f"silo{i}", "nonce": "sim",
                    "num_samples": str(stats.num_samples)}
            yield validate_update(encode(model_to_arrays(model), meta), manifest, expected=meta)

    history = []
    for round_ in range(rounds + 1):
        history.append({"round": round_, **pooled_figures(task, global_arrays, [t for _, t in data]).summary()})
        if on_round:
            on_round(round_, history[-1])
        if round_ < rounds:
            global_arrays = aggregate(global_arrays, updates(round_))
    return history


def centralized_curve(task: Task, initial: Mapping[str, np.ndarray], silos: Sequence[LocalSilo], *, rounds: int,
                      seed: int = 0) -> list[dict]:
    """The same model trained on the union of the silos' training parts (no federation), in ``rounds``
    blocks of ``hp.epochs`` epochs (a fresh optimizer each, like a round), evaluated on the pooled test parts
    after each block — so a federated run compares with it epoch for epoch."""
    train = ConcatDataset([task.read_data(s.train) for s in silos])
    tests = [task.read_data(s.test) for s in silos]
    model = _model(task, initial)
    history = [{"round": 0, **pool((loop.evaluate(task, model, t) for t in tests), task.num_classes).summary()}]
    for round_ in range(1, rounds + 1):
        loop.train(task, model, train, seed=seed + round_)
        history.append({"round": round_, **pool((loop.evaluate(task, model, t) for t in tests),
                                                 task.num_classes).summary()})
    return history
