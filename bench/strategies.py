"""Server strategies through the real system: every strategy trains digits, and the curves side by side.

One ``DevStack`` (Azurite + the Function App on ``fedfunc host`` + local silo processes), 5 silos per
Dirichlet α holding their label-skewed shares of digits, plus an evaluator silo holding the held-out set
(it evaluates every model, never trains). Each strategy is one run through the HTTP API, options at
their documented defaults; FedProx's μ is signed into its bundle (``--proximal-mu``), every other run
shares one bundle. Every bundle carries the default silo-side clip (10 × ‖initial model‖₂), as a
scientist's would. Prints, per α and strategy: the held-out accuracy after each round, the first round
reaching each threshold, the final held-out accuracy and the accuracy pooled over the silos' own test
parts; writes one plot with every curve (``--plot``).

Must-show configuration (every strategy ≥ 0.90), ≈ 20 min on 2 shared cores:
    flock /tmp/fedfunc-heavy.lock env PYTHONPATH=. .venv/bin/python bench/strategies.py
The figure (α = 0.1 and 0.5, 20 rounds, the FedAvg family):
    flock /tmp/fedfunc-heavy.lock env PYTHONPATH=. .venv/bin/python bench/strategies.py --alphas 0.1 0.5 \\
        --rounds 20 --strategies fedavg fedavgm fedadam fedyogi fedprox --plot bench/strategies.png
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fedfunc.aggregation import STRATEGIES
from fedfunc.devstack import DevStack
from fedfunc.tasks.builtin.datasets import DATA_FILE, load, silo_parts

HELDOUT = "heldout"


def rounds_to(curve: list[float], threshold: float) -> str:
    """The first round (1-based: models after that many rounds) at or above ``threshold``."""
    return next((str(r) for r, a in enumerate(curve, start=1) if a >= threshold), "never")


def onboard(stack: DevStack, alphas: list[float], n_silos: int, seed: int) -> dict[float, list[str]]:
    stack.add_silo(HELDOUT)
    stack.upload_data(HELDOUT, {f"digits/test/{DATA_FILE}": load("digits")[1].to_bytes()})
    silos = {}
    for alpha in alphas:
        names = [f"a{str(alpha).replace('.', '')}-site-{i + 1}" for i in range(n_silos)]
        for name, part in zip(names, silo_parts("digits", n_silos, alpha=alpha, seed=seed)):
            stack.add_silo(name)
            stack.upload_data(name, part.files("digits"))
        silos[alpha] = names
    return silos


def run(stack: DevStack, bundle: str, silos: list[str], strategy: str, rounds: int) -> dict:
    t0 = time.monotonic()
    run_id = stack.start_run({"bundle": bundle, "silos": silos, "evaluators": [HELDOUT], "rounds": rounds,
                              "round_deadline_s": 600, "strategy": strategy})
    status = stack.wait_run(run_id, timeout=3600, interval=1.0)
    if status["runtime_status"] != "Completed":
        raise RuntimeError(f"{strategy} run {run_id} {status['runtime_status']}: {status.get('error')}")
    metrics = [h["metrics"] for h in status["history"] if h.get("model")]
    clipped = sum(len([s for s, o in h["silos"].items() if o.get("clipped")]) for h in status["history"])
    return {"run": run_id, "seconds": time.monotonic() - t0, "heldout": [m["heldout_accuracy"] for m in metrics],
            "pooled": [m["accuracy"] for m in metrics], "clipped": clipped}


def plot(results: dict, path: Path, rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False, sharey=True)
    for ax, (alpha, by_strategy) in zip(axes[0], sorted(results.items())):
        for name, r in by_strategy.items():
            ax.plot(range(1, len(r["heldout"]) + 1), r["heldout"], marker="o", markersize=3, label=name)
        ax.axhline(0.9, ls="--", color="gray", lw=0.8)
        ax.set(title=f"digits, 5 silos, Dirichlet α = {alpha}", xlabel="round", ylabel="held-out accuracy",
               ylim=(0, 1), xlim=(0.5, rounds + 0.5))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("fedfunc strategies through the real system (fedfunc host + Azurite + silo processes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--silos", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx's μ, signed into its bundle")
    parser.add_argument("--strategies", nargs="+", default=sorted(STRATEGIES), choices=sorted(STRATEGIES))
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path, help="also write every curve here")
    args = parser.parse_args()
    hp = {"epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    print(f"digits, {args.silos} silos, Dirichlet α in {args.alphas}, {args.rounds} rounds × {args.epochs} local "
          f"epochs, lr {args.lr}; strategies at their default options; FedProx μ = {args.proximal_mu}")
    results: dict[float, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack:
        silos = onboard(stack, args.alphas, args.silos, args.seed)
        bundles = {"default": stack.bundle("digits", hp), "fedprox": stack.bundle("digits", hp,
                                                                                  proximal_mu=args.proximal_mu)}
        print(f"{'α':>4}  {'strategy':<13} {'→0.80':>5} {'→0.90':>5} {'final':>6} {'pooled':>6} {'clipped':>7} "
              f"{'time':>5}  held-out accuracy after each round")
        for alpha in args.alphas:
            for name in args.strategies:
                r = run(stack, bundles.get(name, bundles["default"]), silos[alpha], name, args.rounds)
                results.setdefault(alpha, {})[name] = r
                print(f"{alpha:>4}  {name:<13} {rounds_to(r['heldout'], 0.8):>5} {rounds_to(r['heldout'], 0.9):>5} "
                      f"{r['heldout'][-1]:>6.3f} {r['pooled'][-1]:>6.3f} {r['clipped']:>7} {r['seconds']:>4.0f}s  "
                      + " ".join(f"{a:.3f}" for a in r["heldout"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({str(a): v for a, v in results.items()}, indent=1))
    if args.plot:
        plot(results, args.plot, args.rounds)


if __name__ == "__main__":
    main()
