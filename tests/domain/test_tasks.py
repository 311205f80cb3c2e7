"""Tasks: registry, datasets, training, evaluation, determinism, and federated accuracy targets."""
from __future__ import annotations

import numpy as np
import pytest

from fedfunc.tasks import TASKS, UnknownTask, get_task, xy_from_bytes, xy_to_bytes
from fedfunc.tasks.centralized import train_centralized
from fedfunc.tasks.simulation import simulate
from fedfunc.weights import ModelManifest, encode, model_to_arrays

NAMES = sorted(TASKS)


def test_unknown_task_lists_known_names():
    with pytest.raises(UnknownTask, match=r"unknown task 'mnist'; known tasks: \['breast_cancer', 'digits'\]"):
        get_task("mnist")


@pytest.mark.parametrize("name", NAMES)
def test_dataset_is_fixed_and_typed(name):
    a, b = get_task(name).load_dataset(), get_task(name).load_dataset()
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert a.x_test.dtype == np.float32 and a.y_test.dtype == np.int64
    assert len(a.x_test) > 0 and len(a.x_train) > 3 * len(a.x_test) - 10
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert set(np.unique(a.y_test)) == set(np.unique(a.y_train))


def test_digits_features_are_scaled_by_the_constant_only():
    d = get_task("digits").load_dataset()
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert np.allclose(d.x_train * 16, np.round(d.x_train * 16))  # still integer pixel levels / 16


@pytest.mark.parametrize("name", NAMES)
def test_build_model_is_deterministic_given_seed(name):
    task = get_task(name)
    a, b, c = (model_to_arrays(task.build_model(s)) for s in (1, 1, 2))
    assert encode(a) == encode(b) and encode(a) != encode(c)


@pytest.mark.parametrize("name", NAMES)
def test_train_is_deterministic_and_reports_samples(name):
    task = get_task(name)
    d = task.load_dataset()
    hp = task.default_hyperparams
    results = []
    for _ in range(2):
        model = task.build_model(0)
        fit = task.train(model, d.x_train[:200], d.y_train[:200], epochs=hp.epochs, lr=hp.lr,
                         batch_size=hp.batch_size, seed=7)
        results.append((fit, encode(model_to_arrays(model))))
    assert results[0] == results[1]
    assert results[0][0]["num_samples"] == 200 and np.isfinite(results[0][0]["loss"])


@pytest.mark.parametrize("name", NAMES)
def test_training_improves_held_out_metrics(name):
    task = get_task(name)
    d = task.load_dataset()
    model = task.build_model(0)
    before = task.evaluate(model, d.x_test, d.y_test)
    task.train(model, d.x_train, d.y_train, epochs=3, lr=task.default_hyperparams.lr,
               batch_size=task.default_hyperparams.batch_size, seed=0)
    after = task.evaluate(model, d.x_test, d.y_test)
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"]
    assert after["num_samples"] == len(d.y_test) and 0.0 <= after["accuracy"] <= 1.0


def test_train_refuses_empty_data():
    task = get_task("digits")
    with pytest.raises(ValueError, match="0 samples"):
        task.train(task.build_model(0), np.zeros((0, 64), np.float32), np.zeros(0, np.int64),
                   epochs=1, lr=0.1, batch_size=8, seed=0)


def test_xy_storage_roundtrip_and_errors():
    x, y = np.ones((4, 3), np.float64), np.arange(4)
    x2, y2 = xy_from_bytes(xy_to_bytes(x, y))
    assert x2.dtype == np.float32 and y2.dtype == np.int64
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    with pytest.raises(ValueError, match="rows"):
        xy_to_bytes(x, y[:3])
    with pytest.raises(ValueError, match="lacks array 'y'"):
        xy_from_bytes(encode({"x": x2}))
    with pytest.raises(ValueError, match="'y' is float32"):
        xy_from_bytes(encode({"x": x2, "y": x2[:, 0]}))


def test_model_manifest_of_a_task_model():
    m = ModelManifest.from_arrays(model_to_arrays(get_task("digits").build_model(0)))
    assert m.tensors["0.weight"].shape == (64, 64) and m.tensors["0.weight"].dtype == "float32"


@pytest.mark.slow
def test_fedavg_digits_3_iid_silos_reaches_090():
    task = get_task("digits")
    history = simulate(task, n_silos=3, alpha=None, rounds=task.default_rounds, seed=0)
    assert history[-1]["accuracy"] >= 0.90, history


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fedavg_digits_5_dirichlet_silos_approaches_centralized(seed):
    task = get_task("digits")
    hp = task.default_hyperparams
    history = simulate(task, n_silos=5, alpha=0.5, rounds=task.default_rounds, seed=seed)
    central = train_centralized(task, epochs=hp.epochs * task.default_rounds, lr=hp.lr, batch_size=hp.batch_size,
                                seed=seed)
    assert history[-1]["accuracy"] >= 0.90
    assert history[-1]["accuracy"] >= central["accuracy"] - 0.05, (history[-1], central)


def test_simulation_is_deterministic():
    task = get_task("breast_cancer")
    a = simulate(task, n_silos=3, alpha=0.5, rounds=2, seed=3)
    b = simulate(task, n_silos=3, alpha=0.5, rounds=2, seed=3)
    assert a == b
