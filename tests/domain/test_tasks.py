"""Tasks: the built-in tasks as ordinary task folders, their data, the platform's loops and hooks, and
federated accuracy targets in simulation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedfunc.evaluation import EvalFigures
from fedfunc.tasks import loop
from fedfunc.tasks.builtin import NAMES, UnknownTask, task_dir
from fedfunc.tasks.builtin.datasets import load, silo_parts
from fedfunc.tasks.data import MemoryDataSource
from fedfunc.tasks.loader import build_model, load_weights
from fedfunc.tasks.signing import prepare
from fedfunc.tasks.simulation import LocalSilo, centralized_curve, simulate
from fedfunc.weights import encode, model_to_arrays


@pytest.fixture(scope="module")
def prepared():
    return {name: prepare(task_dir(name)) for name in NAMES}


def local_silos(name: str, n: int, alpha: float | None, seed: int) -> list[LocalSilo]:
    return [LocalSilo.of(f"s{i}", MemoryDataSource(p.files(name)), f"{name}/")
            for i, p in enumerate(silo_parts(name, n, alpha=alpha, seed=seed))]


def test_unknown_builtin_task_lists_the_builtins():
    with pytest.raises(UnknownTask, match=r"unknown built-in task 'mnist'; built-in tasks: \['digits', 'breast_cancer'\]"):
        task_dir("mnist")


@pytest.mark.parametrize("name", NAMES)
def test_builtin_data_is_fixed_typed_and_split_three_ways(name):
    (pool, held), (pool2, _) = load(name), load(name)
    assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64 and held.y.dtype == np.int64
    np.testing.assert_array_equal(pool.x, pool2.x)
    assert len(pool) > 2.5 * len(held) and set(np.unique(held.y)) == set(np.unique(pool.y))
    parts = silo_parts(name, 3, alpha=None, seed=0)
    assert sum(len(p.train) + len(p.test) for p in parts) == len(pool)
    for p in parts:  # each silo's own split, about 80/20
        assert 0.15 < len(p.test) / (len(p.train) + len(p.test)) < 0.25
    again = silo_parts(name, 3, alpha=None, seed=0)
    assert all(np.array_equal(a.test.x, b.test.x) for a, b in zip(parts, again))


def test_digits_silo_data_stays_raw_and_the_task_scales_it(prepared):
    task = prepared["digits"].task
    silo = local_silos("digits", 3, None, 0)[0]
    x, _ = task.read_data(silo.train).tensors
    raw = silo.train.arrays("data.safetensors")["x"]
    assert raw.max() == 16.0 and float(x.max()) == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_initial_weights_are_a_function_of_the_seed(name):
    a, b = prepare(task_dir(name)), prepare(task_dir(name))
    c = prepare(task_dir(name), {"seed": 1})
    assert encode(a.initial) == encode(b.initial) and encode(a.initial) != encode(c.initial)


@pytest.mark.parametrize("name", NAMES)
def test_train_is_deterministic_and_improves_pooled_test_figures(name, prepared):
    p = prepared[name]
    silos = local_silos(name, 1, None, 0)  # one silo holding the whole pool
    train, test = p.task.read_data(silos[0].train), p.task.read_data(silos[0].test)
    results = []
    for _ in range(2):
        model = build_model(p.task)
        load_weights(model, p.initial)
        before = loop.evaluate(p.task, model, test)
        stats = loop.train(p.task, model, train, seed=7, epochs=3)
        results.append((stats, encode(model_to_arrays(model))))
    assert results[0] == results[1]
    assert results[0][0].num_samples == len(train) and np.isfinite(results[0][0].loss)
    after = loop.evaluate(p.task, model, test)
    assert after.loss < before.loss and after.accuracy > before.accuracy
    assert after.num_examples == len(test) == int(after.confusion.sum())


def test_train_refuses_empty_data(prepared):
    p = prepared["digits"]
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long))
    with pytest.raises(loop.TaskOutputError, match="no training examples"):
        loop.train(p.task, build_model(p.task), empty, seed=0)


class ProximalTerm:
    """A loss hook as FedProx uses it: μ/2 ‖w − w₀‖² against the weights the round started from."""

    name = "proximal term"

    def __init__(self, mu: float, model):
        self.mu, self.start = mu, [q.detach().clone() for q in model.parameters()]
        self.wrapped = []

    def wrap(self, model, optimizer, loader):
        self.wrapped.append((model, optimizer, loader))
        return model, optimizer, loader

    def loss(self, loss, model):
        return loss + self.mu / 2 * sum(((q - q0) ** 2).sum() for q, q0 in zip(model.parameters(), self.start))


def test_training_hooks_act_inside_the_platform_loop(prepared):
    p = prepared["digits"]
    train = p.task.read_data(local_silos("digits", 3, None, 0)[0].train)

    def drift(hooks) -> float:
        model = build_model(p.task)
        load_weights(model, p.initial)
        loop.train(p.task, model, train, seed=1, hooks=hooks(model))
        return sum(float(((q.detach() - torch.as_tensor(p.initial[n])) ** 2).sum())
                   for n, q in model.named_parameters())

    seen = []
    free = drift(lambda m: [])
    held = drift(lambda m: seen.append(ProximalTerm(10.0, m)) or seen)
    assert held < free / 2, "the proximal term did not pull the weights towards the round's start"
    model, optimizer, loader = seen[0].wrapped[0]
    assert isinstance(optimizer, torch.optim.Optimizer) and loader.batch_size == p.task.hp.batch_size


def test_a_task_with_its_own_train_step_is_refused_for_platform_loop_features(prepared):
    from fedfunc.tasks.api import Task

    base = type(prepared["digits"].task)

    class OwnStep(base):
        def train(self, model, dataset, *, seed):
            return {"loss": 0.5}

    task = OwnStep(prepared["digits"].task.hp)
    assert OwnStep.own_training and not base.own_training and not Task.own_training
    model = build_model(task)
    data = task.read_data(local_silos("digits", 3, None, 0)[0].train)
    assert loop.train(task, model, data, seed=0).loss == 0.5
    with pytest.raises(loop.NeedsPlatformLoop, match="own train step.*proximal term"):
        loop.train(task, model, data, seed=0, hooks=[ProximalTerm(0.1, model)])


def test_evaluation_hands_per_example_scores_to_sinks_and_checks_labels(prepared):
    p = prepared["digits"]
    test = p.task.read_data(local_silos("digits", 3, None, 0)[0].test)
    model = build_model(p.task)

    class Collect:
        rows = []

        def add(self, targets, predictions, scores):
            self.rows += list(zip(targets.tolist(), predictions.tolist(), scores.sum(1).tolist()))

    sink = Collect()
    figures = loop.evaluate(p.task, model, test, sinks=[sink])
    assert len(sink.rows) == figures.num_examples
    assert sum(t == q for t, q, _ in sink.rows) == int(np.trace(figures.confusion))
    assert all(abs(s - 1) < 1e-5 for _, _, s in sink.rows)
    bad = torch.utils.data.TensorDataset(torch.zeros(2, 64), torch.tensor([3, 12]))
    with pytest.raises(loop.TaskOutputError, match="label 12 is outside 0..9"):
        loop.evaluate(p.task, model, bad)


def test_figures_pool_exactly():
    a = EvalFigures(3, 1.5, np.array([[2, 0], [1, 0]]))
    b = EvalFigures(1, 0.5, np.array([[0, 0], [0, 1]]))
    pooled = a + b
    assert pooled.num_examples == 4 and pooled.accuracy == 0.75 and pooled.loss == 0.5
    assert pooled.summary("heldout_") == {"heldout_accuracy": 0.75, "heldout_loss": 0.5, "heldout_num_examples": 4}


def test_simulation_is_deterministic(prepared):
    p = prepared["breast_cancer"]
    silos = local_silos("breast_cancer", 3, 0.5, 3)
    a = simulate(p.task, p.initial, silos, rounds=2, seed=3)
    b = simulate(p.task, p.initial, silos, rounds=2, seed=3)
    assert a == b and [h["round"] for h in a] == [0, 1, 2]


@pytest.mark.slow
def test_fedavg_digits_3_iid_silos_reaches_090(prepared):
    p = prepared["digits"]
    history = simulate(p.task, p.initial, local_silos("digits", 3, None, 0), rounds=10)
    assert history[-1]["accuracy"] >= 0.90, history


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fedavg_digits_5_dirichlet_silos_approaches_centralized(prepared, seed):
    p = prepared["digits"]
    silos = local_silos("digits", 5, 0.5, seed)
    history = simulate(p.task, p.initial, silos, rounds=10, seed=seed)
    central = centralized_curve(p.task, p.initial, silos, rounds=10, seed=seed)[-1]
    assert history[-1]["accuracy"] >= 0.90
    assert history[-1]["accuracy"] >= central["accuracy"] - 0.05, (history[-1], central)
