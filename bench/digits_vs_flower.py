"""Digits end to end: fedfunc through the real system next to Flower's simulation, in the same run.

The same configuration on both: digits, 5 silos (Flower: 5 simulated clients) holding the same parts
(``fedfunc.tasks.builtin.datasets.silo_parts``: Dirichlet α = 0.5 label skew, seed 0, each silo's share
split into its own train and test parts), 10 rounds × 5 local epochs, lr 0.1, the built-in digits task's
MLP, optimizer, batch size and the platform's training loop (``fedfunc.tasks.loop``), the same initial
weights (the signed bundle's), FedAvg. Both sides train on the silos' train parts only and report, after
every round, the global model's accuracy pooled over the 5 silos' test parts: fedfunc as the system does
(each silo evaluates the model it receives on its own test part; the run ends with an evaluate-only round
for the last model), Flower centrally in its ``evaluate_fn`` on the same test parts, pooled the same way
(``fedfunc.tasks.simulation.pooled_figures``). Neither side uses the held-out set. Local training seeds
differ (fedfunc derives them from the run id), so the curves agree in trend, not to the digit.

Start-up is excluded on both sides: for fedfunc, Azurite, the host, onboarding and the data uploads (the
run is timed from its first step to its last, by its own clock, in ``report.json``, so the final
evaluate-only round is included); for Flower, starting Ray and its client actors (timed from round 1's
``configure_fit`` to round 10's evaluation).

fedfunc runs here, in the app's venv; Flower runs in its own venv (``flwr[simulation]`` pins typer and
rich below the app's), which also sees the app venv so its clients train the same model the same way:
    python3.11 -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install -r bench/requirements.txt
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/flwr-venv/lib/python3.11/site-packages/app.pth
    flock /tmp/fedfunc-heavy.lock .venv/bin/python bench/digits_vs_flower.py [--flower-python PY]
Without that venv the bench says so and runs the fedfunc side alone.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SILOS, ALPHA, ROUNDS, EPOCHS, LR, SEED = 5, 0.5, 10, 5, 0.1, 0
HP = {"epochs": EPOCHS, "lr": LR, "seed": SEED}  # batch size: the task's default, on both sides


def parts():
    from fedfunc.tasks.builtin.datasets import silo_parts

    return silo_parts("digits", SILOS, alpha=ALPHA, seed=SEED)


# ---- fedfunc, through the real system --------------------------------------------------------------
def run_fedfunc() -> dict:
    from datetime import datetime

    from fedfunc import layout
    from fedfunc.devstack import DevStack

    silos = [f"site-{i + 1}" for i in range(SILOS)]
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack:
        stack.add_silos(silos)
        for silo, part in zip(silos, parts()):
            stack.upload_data(silo, part.files("digits"))
        bundle = stack.bundle("digits", HP)
        t0 = time.monotonic()
        run = stack.start_run({"silos": silos, "rounds": ROUNDS, "round_deadline_s": 600, "bundle": bundle})
        status = stack.wait_run(run, timeout=3600, interval=0.05)
        observed = time.monotonic() - t0
        if status["runtime_status"] != "Completed":
            raise SystemExit(f"fedfunc run {run} {status['runtime_status']}: {status.get('error')}")
        report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    wall = (datetime.fromisoformat(report["ended"]) - datetime.fromisoformat(report["started"])).total_seconds()
    return {"wall_s": wall, "observed_s": observed, "accuracy": [r["accuracy"] for r in report["rounds"]]}


# ---- Flower's simulation (in Flower's venv) -----------------------------------------------------------
def prepared():
    """The digits task with ``HP`` and its initial weights, loaded as a silo loads the bundle."""
    from fedfunc.tasks.builtin import task_dir
    from fedfunc.tasks.signing import prepare

    return prepare(task_dir("digits"), HP)


def run_flower() -> dict:
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedfunc.tasks import loop
    from fedfunc.tasks.builtin.datasets import local_silos
    from fedfunc.tasks.loader import build_model, load_weights
    from fedfunc.tasks.simulation import local_seed, pooled_figures
    from fedfunc.weights import model_to_arrays

    server = prepared()
    names = list(server.initial)
    tests = [server.task.read_data(s.test) for s in local_silos("digits", SILOS, alpha=ALPHA, seed=SEED)]
    times: dict[str, float] = {}
    accuracy: list[float] = []

    class Silo(NumPyClient):
        """One client: a silo's train part, trained as a silo job trains (``fedfunc.silo.runner``)."""

        def __init__(self, partition: int):
            self.partition, self.task = partition, prepared().task
            silo = local_silos("digits", SILOS, alpha=ALPHA, seed=SEED)[partition]
            self.train = self.task.read_data(silo.train)

        def fit(self, parameters, config):
            model = build_model(self.task)
            load_weights(model, dict(zip(names, parameters)))
            seed = local_seed(SEED, int(config["round"]), self.partition)
            stats = loop.train(self.task, model, self.train, seed=seed)
            return list(model_to_arrays(model).values()), stats.num_samples, {}

    def client_fn(context: Context):
        return Silo(int(context.node_config["partition-id"])).to_client()

    def evaluate(round_, parameters, config):
        figures = pooled_figures(server.task, dict(zip(names, parameters)), tests)
        if round_ > 0:
            accuracy.append(figures.accuracy)
        if round_ == ROUNDS:
            times["end"] = time.monotonic()
        return figures.loss, {"accuracy": figures.accuracy}

    class Timed(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            times.setdefault("start", time.monotonic())
            return super().configure_fit(server_round, parameters, client_manager)

    def server_fn(context: Context):
        strategy = Timed(fraction_fit=1.0, min_fit_clients=SILOS, min_available_clients=SILOS, fraction_evaluate=0.0,
                         evaluate_fn=evaluate, on_fit_config_fn=lambda r: {"round": r},
                         initial_parameters=ndarrays_to_parameters(list(server.initial.values())))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ROUNDS))

    t0 = time.monotonic()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=SILOS, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    import flwr
    return {"wall_s": times["end"] - times["start"], "observed_s": time.monotonic() - t0,
            "accuracy": accuracy, "version": flwr.__version__, "numpy": np.__version__}


def flower_side(python: str) -> dict | None:
    """Flower's figures from its venv, or None (saying why) when that venv is missing."""
    if not Path(python).exists():
        print(f"Flower's venv is missing ({python} not found; see this file's docstring): fedfunc side only",
              flush=True)
        return None
    flower = subprocess.run([python, __file__, "--flower"], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "RAY_DEDUP_LOGS": "0"})
    line = next((ln for ln in flower.stdout.splitlines() if ln.startswith("FLOWER ")), None)
    if line is None:
        raise SystemExit(f"Flower's simulation failed:\n{flower.stdout[-3000:]}\n{flower.stderr[-3000:]}")
    return json.loads(line[len("FLOWER "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flower-python", default="/tmp/flwr-venv/bin/python", help="Flower's venv's python")
    p.add_argument("--flower", action="store_true", help=argparse.SUPPRESS)  # internal: the Flower side
    args = p.parse_args()
    if args.flower:
        print("FLOWER " + json.dumps(run_flower()))
        return
    print(f"digits, {SILOS} silos, Dirichlet α={ALPHA}, {ROUNDS} rounds × {EPOCHS} local epochs, lr {LR}; "
          f"accuracy pooled over the silos' test parts; start-up excluded", flush=True)
    theirs = flower_side(args.flower_python)
    ours = run_fedfunc()
    sides = ([(f"Flower {theirs['version']} simulation", theirs)] if theirs else []) + [("fedfunc (real system)", ours)]
    for name, r in sides:
        print(f"{name:<28} wall {r['wall_s']:6.2f} s (with start-up {r['observed_s']:6.1f} s)  "
              f"final accuracy {r['accuracy'][-1]:.4f}  per round {' '.join(f'{a:.3f}' for a in r['accuracy'])}")
    if theirs:
        print(f"fedfunc / Flower wall time: {ours['wall_s'] / theirs['wall_s']:.2f}×")


if __name__ == "__main__":
    main()
