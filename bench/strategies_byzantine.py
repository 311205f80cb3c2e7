"""Robust rules against one Byzantine silo, in process (``fedfunc.tasks.simulation``): digits,
5 silos, Dirichlet(α) label skew, the task's default local training; every round silo 0 sends
``global + scale · (its honest update − global)`` — finite, so only the rule can stop it (the
default update-norm bound is off, as in ``simulate``). Prints final accuracy and accuracy per round
for FedAvg, trimmed mean, median and Krum (f = 1), and the same without the attacker.

Run: flock /tmp/fedfunc-heavy.lock env PYTHONPATH=. .venv/bin/python bench/strategies_byzantine.py
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from fedfunc.aggregation import MemoryUpdate, StrategySpec
from fedfunc.tasks import get_task
from fedfunc.tasks.simulation import simulate

RULES = {"fedavg": "fedavg", "trimmed_mean": {"name": "trimmed_mean", "options": {"beta": 0.2}},
         "median": "median", "krum": {"name": "krum", "options": {"f": 1}}}


def byzantine(spec, scale: float | None):
    """The rule as ``simulate``'s aggregate, with silo0's update scaled (None: no attacker)."""
    strategy = StrategySpec.model_validate(spec).build()
    state = None

    def aggregate(global_arrays, updates):
        nonlocal state
        state = state or strategy.initial_state(global_arrays)
        batch = []
        for u in updates:
            if scale is not None and u.key == "silo0":
                u = MemoryUpdate(u.key, u.num_samples, {
                    k: (g + scale * (u.arrays[k].astype(np.float64) - g)).astype(g.dtype) if g.dtype.kind == "f"
                    else u.arrays[k] for k, g in global_arrays.items()})
            batch.append(u)
        result = strategy.aggregate_round(global_arrays, batch, state)
        state = result.state
        return result.arrays

    return aggregate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--scale", type=float, default=-10.0, help="the attacker's multiple of its own delta")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="local epochs (default: the task's)")
    parser.add_argument("--lr", type=float, help="local learning rate (default: the task's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task("digits")
    hp = task.default_hyperparams.model_copy(update={k: v for k, v in (("epochs", args.epochs), ("lr", args.lr))
                                                     if v is not None})
    print(f"digits, 5 silos, Dirichlet α={args.alpha}, {args.rounds} rounds, local {hp}; "
          f"Byzantine silo0 sends global + {args.scale:g}·(its delta) every round; no norm bound")
    print(f"{'seed':>4}  {'rule':<13} {'attacker':<8} {'final':>6}  accuracy per round")
    for seed in args.seeds:
        for name, spec in RULES.items():
            for scale in (None, args.scale):
                history = simulate(task, n_silos=5, alpha=args.alpha, rounds=args.rounds, seed=seed,
                                   hyperparams=hp, aggregate=byzantine(spec, scale))
                curve = " ".join(f"{h['accuracy']:.3f}" for h in history)
                print(f"{seed:>4}  {name:<13} {'yes' if scale is not None else 'no':<8} "
                      f"{history[-1]['accuracy']:>6.3f}  {curve}", flush=True)


if __name__ == "__main__":
    main()
