"""Golden fixtures from Flower 1.42's own strategies, for tests/domain/test_strategies_flower.py.

Feeds identical float32 inputs (a small 3-tensor model, 5 silos, 4 rounds, fixed sample counts) to
Flower's ``flwr.serverapp.strategy`` FedAdam, FedYogi, FedAdagrad, FedAvgM, FedTrimmedAvg, FedMedian,
Krum and MultiKrum, and to the legacy ``flwr.server.strategy.FedAdam`` (τ = 1e-9), each carrying its
own state across the rounds, and writes every round's resulting model to
``tests/fixtures/flower/{case}.safetensors`` (inputs in ``inputs.safetensors``). The test replays
the same inputs through our strategies, with the state passed through ``encode_state`` /
``decode_state`` between rounds, and compares.

Flower pins typer<0.21 and rich<15, so it runs in its own venv that also sees the app venv:
    python3.11 -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install -r bench/requirements.txt
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/flwr-venv/lib/python3.11/site-packages/app.pth
    PYTHONPATH=. /tmp/flwr-venv/bin/python bench/flower_golden.py
Without Flower it says so and writes nothing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from fedfunc.weights import encode

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "flower"
ROUNDS, SILOS = 4, 5
SHAPES = {"dense.weight": (6, 5), "dense.bias": (5,), "out.weight": (5, 3)}

# case: (Flower class, its keyword arguments, our StrategySpec)
CASES = {
    "fedadam": ("serverapp.FedAdam", {}, {"name": "fedadam"}),
    "fedadam_legacy": ("server.FedAdam", {}, {"name": "fedadam", "options": {"tau": 1e-9}}),
    "fedyogi": ("serverapp.FedYogi", {}, {"name": "fedyogi"}),
    "fedadagrad": ("serverapp.FedAdagrad", {}, {"name": "fedadagrad"}),
    "fedavgm": ("serverapp.FedAvgM", {"server_learning_rate": 0.5, "server_momentum": 0.9},
                {"name": "fedavgm", "options": {"server_learning_rate": 0.5, "server_momentum": 0.9}}),
    "trimmed_mean": ("serverapp.FedTrimmedAvg", {"beta": 0.2}, {"name": "trimmed_mean", "options": {"beta": 0.2}}),
    "median": ("serverapp.FedMedian", {}, {"name": "median"}),
    "krum": ("serverapp.Krum", {"num_malicious_nodes": 1}, {"name": "krum", "options": {"f": 1}}),
    "multikrum": ("serverapp.MultiKrum", {"num_malicious_nodes": 1, "num_nodes_to_select": 3},
                  {"name": "krum", "options": {"f": 1, "m": 3}}),
}


def make_inputs() -> tuple[dict[str, np.ndarray], list[list[dict[str, np.ndarray]]], list[list[int]]]:
    """Initial model; per round, each silo's model (a drifting target plus silo noise) and sample count."""
    rng = np.random.default_rng(2024)
    initial = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in SHAPES.items()}
    drift = {k: rng.normal(0, 0.1, s) for k, s in SHAPES.items()}
    updates, samples = [], []
    for r in range(1, ROUNDS + 1):
        updates.append([{k: (initial[k] + r * drift[k] + rng.normal(0, 0.05, s)).astype(np.float32)
                         for k, s in SHAPES.items()} for _ in range(SILOS)])
        samples.append([int(n) for n in rng.integers(20, 400, SILOS)])
    return initial, updates, samples


class _Grid:
    """Just enough of a Grid for ``configure_train`` to address the silos."""

    def get_node_ids(self):
        return list(range(1, SILOS + 1))


def run_flower(kind: str, kwargs: dict, initial, updates, samples) -> list[dict[str, np.ndarray]]:
    """Each round's model from Flower's strategy, driven as its ServerApp / legacy server would."""
    names = list(SHAPES)
    if kind.startswith("server."):
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server import strategy as legacy

        strategy = getattr(legacy, kind.split(".")[1])(
            initial_parameters=ndarrays_to_parameters([initial[k] for k in names]), **kwargs)
        results = []
        for r, (round_updates, round_samples) in enumerate(zip(updates, samples), start=1):
            fit = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([u[k] for k in names]), n, {}))
                   for u, n in zip(round_updates, round_samples)]
            params, _ = strategy.aggregate_fit(r, fit, [])
            results.append(dict(zip(names, parameters_to_ndarrays(params), strict=True)))
        return results

    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp import strategy as serverapp
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # what a ServerApp process has set
    strategy = getattr(serverapp, kind.split(".")[1])(min_train_nodes=SILOS, min_available_nodes=SILOS, **kwargs)
    arrays = ArrayRecord({k: Array(initial[k]) for k in names})
    results = []
    for r, (round_updates, round_samples) in enumerate(zip(updates, samples), start=1):
        strategy.configure_train(r, arrays, ConfigRecord(), _Grid())
        replies = [Message(RecordDict({"arrays": ArrayRecord({k: Array(u[k]) for k in names}),
                                       "metrics": MetricRecord({"num-examples": n})}), dst_node_id=i + 1,
                           message_type="train")
                   for i, (u, n) in enumerate(zip(round_updates, round_samples))]
        arrays, _ = strategy.aggregate_train(r, replies)
        results.append({k: np.asarray(arrays[k].numpy()) for k in names})
    return results


def main() -> None:
    try:
        import flwr
    except ImportError:
        print("Flower is not installed in this interpreter: no fixtures written (see this file's docstring)")
        return
    logging.getLogger("flwr").setLevel(logging.WARNING)
    initial, updates, samples = make_inputs()
    OUT.mkdir(parents=True, exist_ok=True)
    tensors = {f"initial/{k}": v for k, v in initial.items()}
    for r, round_updates in enumerate(updates, start=1):
        for i, u in enumerate(round_updates):
            tensors.update({f"r{r}/silo{i}/{k}": v for k, v in u.items()})
    (OUT / "inputs.safetensors").write_bytes(encode(tensors, {
        "samples": json.dumps(samples), "flwr": flwr.__version__, "rounds": str(ROUNDS), "silos": str(SILOS)}))
    for case, (kind, kwargs, ours) in CASES.items():
        rounds = run_flower(kind, kwargs, initial, updates, samples)
        (OUT / f"{case}.safetensors").write_bytes(encode(
            {f"r{r}/{k}": v for r, arrays in enumerate(rounds, start=1) for k, v in arrays.items()},
            {"flower": f"flwr {flwr.__version__} {kind}({json.dumps(kwargs, sort_keys=True)})",
             "ours": json.dumps(ours, sort_keys=True)}))
        print(f"{case:<15} {kind}({kwargs}) → {ROUNDS} rounds, dtype {rounds[-1]['dense.weight'].dtype}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
