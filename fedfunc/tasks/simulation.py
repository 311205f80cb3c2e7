"""In-process federated runs (no stack, no storage): ``fedfunc task try``, and the reference the tests and
benches compare the real system with.

Each silo's data is read through the same ``DataReader`` a silo job gets; every update crosses the wire
format (``encode`` → ``validate_update``) as a silo's blob would; evaluation pools each silo's test-part
figures exactly as the orchestrator pools them. ``history[k]`` holds the pooled test figures of the model
after k rounds (k = 0: the initial model).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from fedfunc.aggregation import BlockUpdate, DeltaUpdate, FedAvg, Strategy
from fedfunc.evaluation import EvalFigures, pool
from fedfunc.tasks import loop
from fedfunc.tasks.api import Task
from fedfunc.tasks.data import DataReader, DataSource
from fedfunc.tasks.loader import build_model, load_weights
from fedfunc.pipeline import SiloSide, check_history, from_metadata, to_metadata
from fedfunc.pipeline.silo import SiloPipeline
from fedfunc.weights import ModelManifest, encode, model_to_arrays, validate_update

# (global arrays, the round's checked updates) -> the next global arrays
Aggregate = Callable[[Mapping[str, np.ndarray], list[BlockUpdate]], dict[str, np.ndarray]]


def rounds_of(strategy: Strategy) -> Aggregate:
    """``strategy.aggregate_round`` as ``simulate``'s aggregate, carrying its state from round to round."""
    state = None

    def aggregate(global_arrays: Mapping[str, np.ndarray], updates: list[BlockUpdate]) -> dict[str, np.ndarray]:
        nonlocal state
        result = strategy.aggregate_round(global_arrays, updates,
                                          strategy.initial_state(global_arrays) if state is None else state)
        state = result.state
        return result.arrays
    return aggregate


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
             seed: int = 0, aggregate: Aggregate | None = None, side: SiloSide | None = None,
             on_round: Callable[[int, dict], None] | None = None) -> list[dict]:
    """``rounds`` FedAvg rounds (or ``aggregate``'s rule, e.g. ``rounds_of(strategy)``) over ``silos``, each
    silo training with the signed silo ``side`` (FedProx's μ, the update transforms) as a silo job does, and
    its update checked as the orchestrator checks it; pooled test figures per round."""
    data = [(task.read_data(s.train), task.read_data(s.test)) for s in silos]
    aggregate = aggregate or rounds_of(FedAvg())
    side = side or SiloSide()
    global_arrays = dict(initial)
    manifest = ModelManifest.from_arrays(global_arrays)

    def updates(round_: int) -> list[BlockUpdate]:
        out = []
        for i, (train, _) in enumerate(data):
            model = _model(task, global_arrays)
            silo = SiloPipeline(side)
            stats = loop.train(task, model, train, seed=local_seed(seed, round_, i), hooks=silo.hooks())
            update = silo.finish(model_to_arrays(model), global_arrays)
            meta = {"run": "sim", "round": str(round_), "silo": f"silo{i}", "nonce": "sim",
                    "num_samples": str(stats.num_samples)}
            checked = validate_update(encode(update.arrays, {**meta, **to_metadata(update)}), manifest, expected=meta)
            kind, history = from_metadata(checked.metadata)
            check_history(kind, history, side)
            out.append(DeltaUpdate(checked, global_arrays) if kind == "delta" else checked)
        return out

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
