"""Our FedAvg vs Flower's ``FedAvg.aggregate_fit`` on the same federated run, plus the
centralized baseline: digits, 5 silos, Dirichlet(α=0.5) label skew, the task's default local
training, identical seeds. Prints per-round accuracy pooled over the silos' test parts, rounds to 0.80 / 0.90, the final
accuracy, and how far apart the two aggregators' models are when fed the same updates.

Flower (bench/requirements.txt) conflicts with the app's pins (typer, rich), so it lives in its
own venv that also sees the app venv's packages:
    python3.11 -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install -r bench/requirements.txt
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/flwr-venv/lib/python3.11/site-packages/app.pth
    PYTHONPATH=. /tmp/flwr-venv/bin/python bench/fedavg_vs_flower.py
Without Flower the bench still prints ours vs centralized and says Flower was skipped.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping

import numpy as np
import torch

from fedfunc.aggregation import BlockUpdate, FedAvg
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.builtin.datasets import local_silos
from fedfunc.tasks.signing import prepare
from fedfunc.tasks.simulation import Aggregate, centralized_curve, rounds_of, simulate

THRESHOLDS = (0.80, 0.90)


def flower_fedavg() -> Aggregate | None:
    """Flower's FedAvg.aggregate_fit behind our aggregate signature (None if Flower is absent)."""
    try:
        import flwr
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server.strategy import FedAvg
    except ImportError:
        return None
    strategy, rounds = FedAvg(), iter(range(1, 1 << 30))

    def aggregate(global_arrays: Mapping[str, np.ndarray], updates: list[BlockUpdate]) -> dict[str, np.ndarray]:
        names = list(global_arrays)
        results = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([
            np.asarray(u.read(k, 0, global_arrays[k].size)).reshape(global_arrays[k].shape) for k in names]),
                                 u.num_samples, {})) for u in updates]
        params, _ = strategy.aggregate_fit(next(rounds), results, [])
        return dict(zip(names, parameters_to_ndarrays(params), strict=True))

    aggregate.version = flwr.__version__
    return aggregate


def paired(ours: Aggregate, theirs: Aggregate, diffs: list[float]) -> Aggregate:
    """Aggregate each round's identical updates with both; record max |Δ|; carry on with ours."""
    def aggregate(global_arrays, updates):
        a, b = ours(global_arrays, updates), theirs(global_arrays, updates)
        diffs.append(max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a))
        return a
    return aggregate


def rounds_to(history: list[dict], threshold: float) -> str:
    return next((str(h["round"]) for h in history if h["accuracy"] >= threshold), "never")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--silos", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    prepared = prepare(task_dir("digits"))
    task, hp = prepared.task, prepared.task.hp

    def run(seed: int, aggregate: Aggregate) -> list[dict]:
        silos = local_silos("digits", args.silos, alpha=args.alpha, seed=seed)
        return simulate(task, prepared.initial, silos, rounds=args.rounds, seed=seed, aggregate=aggregate)

    flower = flower_fedavg()
    print(f"digits, {args.silos} silos, Dirichlet α={args.alpha}, {args.rounds} rounds, local {hp}")
    print("Flower: " + (f"flwr {flower.version} FedAvg.aggregate_fit" if flower else
                        "NOT INSTALLED — skipped (see this file's docstring)"))
    runs = {"fedfunc FedAvg": lambda s: run(s, rounds_of(FedAvg()))}
    if flower:
        runs["Flower FedAvg"] = lambda s: run(s, flower)
    runs["centralized"] = lambda s: centralized_curve(
        task, prepared.initial, local_silos("digits", args.silos, alpha=args.alpha, seed=s), rounds=args.rounds, seed=s)
    print(f"{'seed':>4}  {'run':<15} {'→0.80':>6} {'→0.90':>6} {'final':>6}  accuracy per round")
    finals: dict[str, list[float]] = {name: [] for name in runs}
    for seed in args.seeds:
        for name, run in runs.items():
            history = run(seed)
            finals[name].append(history[-1]["accuracy"])
            curve = " ".join(f"{h['accuracy']:.3f}" for h in history)
            print(f"{seed:>4}  {name:<15} {rounds_to(history, 0.80):>6} {rounds_to(history, 0.90):>6} "
                  f"{history[-1]['accuracy']:>6.3f}  {curve}")
    print("mean final accuracy: " + ", ".join(f"{n} {np.mean(v):.4f}" for n, v in finals.items()))
    if flower:
        gap = max(abs(a - b) for a, b in zip(finals["fedfunc FedAvg"], finals["Flower FedAvg"]))
        print(f"largest final-accuracy difference fedfunc vs Flower over seeds: {gap:.4f}")
        diffs: list[float] = []
        run(args.seeds[0], paired(rounds_of(FedAvg()), flower, diffs))
        print(f"same updates, both aggregators, every round (seed {args.seeds[0]}): "
              f"max |fedfunc − Flower| over all parameters = {max(diffs):.3g}")


if __name__ == "__main__":
    main()
