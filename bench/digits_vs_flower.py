"""Digits end to end: fedfunc through the real system next to Flower's simulation, in the same run.

The same configuration on both: digits, 5 silos (Flower: 5 simulated clients), Dirichlet α = 0.5 label
skew (``fedfunc.tasks.partition``, seed 0), 10 rounds × 5 local epochs, lr 0.1, the task's MLP, batch
size and training loop (``fedfunc.tasks``), FedAvg, the global model evaluated on the held-out set after
every round. Start-up is excluded on both sides: for fedfunc, Azurite, the host, onboarding and the data
uploads (the run is timed from its first step to its last, by its own clock, in ``report.json``); for
Flower, starting Ray and its client actors (timed from round 1's ``configure_fit`` to round 10's
evaluation).

fedfunc runs here, in the app's venv; Flower runs in its own venv (``flwr[simulation]`` pins typer and
rich below the app's), which also sees the app venv so its clients train the same model the same way:
    python3.11 -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install -r bench/requirements.txt
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/flwr-venv/lib/python3.11/site-packages/app.pth
    .venv/bin/python bench/digits_vs_flower.py [--flower-python /tmp/flwr-venv/bin/python]
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


def config() -> dict:
    from fedfunc.tasks.registry import get_task

    hp = get_task("digits").default_hyperparams
    return {"epochs": EPOCHS, "lr": LR, "batch_size": hp.batch_size, "seed": SEED}


def partitions():
    from fedfunc.tasks.partition import partition
    from fedfunc.tasks.registry import get_task

    data = get_task("digits").load_dataset()
    return data, partition(data.y_train, SILOS, alpha=ALPHA, seed=SEED)


# ---- fedfunc, through the real system --------------------------------------------------------------
def run_fedfunc() -> dict:
    from datetime import datetime

    from fedfunc import layout
    from fedfunc.devstack import DevStack

    data, parts = partitions()
    silos = [f"site-{i + 1}" for i in range(SILOS)]
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack:
        stack.add_silos(silos)
        for silo, idx in zip(silos, parts):
            stack.upload_data(silo, "digits", data.x_train[idx], data.y_train[idx])
        t0 = time.monotonic()
        run = stack.start_run({"task": "digits", "silos": silos, "rounds": ROUNDS, "round_deadline_s": 600,
                               "seed": SEED, "bundle": stack.signed_bundle("digits", config())})
        status = stack.wait_run(run, timeout=3600, interval=0.05)
        observed = time.monotonic() - t0
        if status["runtime_status"] != "Completed":
            raise SystemExit(f"fedfunc run {run} {status['runtime_status']}: {status.get('error')}")
        report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    wall = (datetime.fromisoformat(report["ended"]) - datetime.fromisoformat(report["started"])).total_seconds()
    return {"wall_s": wall, "observed_s": observed, "accuracy": [r["accuracy"] for r in report["rounds"]]}


# ---- Flower's simulation (in Flower's venv) -----------------------------------------------------------
def run_flower() -> dict:
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedfunc.tasks.registry import get_task
    from fedfunc.weights import load_arrays_into, model_to_arrays

    task, hp = get_task("digits"), config()
    names = list(model_to_arrays(task.build_model(SEED)))
    times: dict[str, float] = {}
    accuracy: list[float] = []

    class Silo(NumPyClient):
        def __init__(self, partition: int):
            data, parts = partitions()
            self.partition, self.x, self.y = partition, data.x_train[parts[partition]], data.y_train[parts[partition]]

        def fit(self, parameters, config):
            model = task.build_model(SEED)
            load_arrays_into(model, dict(zip(names, parameters)))
            stats = task.train(model, self.x, self.y, epochs=hp["epochs"], lr=hp["lr"], batch_size=hp["batch_size"],
                               seed=SEED * 1000 + int(config["round"]) * 10 + self.partition)
            return list(model_to_arrays(model).values()), stats["num_samples"], {}

    def client_fn(context: Context):
        return Silo(int(context.node_config["partition-id"])).to_client()

    data, _ = partitions()

    def evaluate(round_, parameters, config):
        model = task.build_model(SEED)
        load_arrays_into(model, dict(zip(names, parameters)))
        metrics = task.evaluate(model, data.x_test, data.y_test)
        if round_ > 0:
            accuracy.append(metrics["accuracy"])
        if round_ == ROUNDS:
            times["end"] = time.monotonic()
        return metrics["loss"], {"accuracy": metrics["accuracy"]}

    class Timed(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            times.setdefault("start", time.monotonic())
            return super().configure_fit(server_round, parameters, client_manager)

    def server_fn(context: Context):
        strategy = Timed(fraction_fit=1.0, min_fit_clients=SILOS, min_available_clients=SILOS, fraction_evaluate=0.0,
                         evaluate_fn=evaluate, on_fit_config_fn=lambda r: {"round": r},
                         initial_parameters=ndarrays_to_parameters(list(model_to_arrays(task.build_model(SEED)).values())))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ROUNDS))

    t0 = time.monotonic()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=SILOS, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    import flwr
    return {"wall_s": times["end"] - times["start"], "observed_s": time.monotonic() - t0,
            "accuracy": accuracy, "version": flwr.__version__, "numpy": np.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flower-python", default="/tmp/flwr-venv/bin/python", help="Flower's venv's python")
    p.add_argument("--flower", action="store_true", help=argparse.SUPPRESS)  # internal: the Flower side
    args = p.parse_args()
    if args.flower:
        print("FLOWER " + json.dumps(run_flower()))
        return
    print(f"digits, {SILOS} silos, Dirichlet α={ALPHA}, {ROUNDS} rounds × {EPOCHS} local epochs, lr {LR}; "
          f"start-up excluded", flush=True)
    flower = subprocess.run([args.flower_python, __file__, "--flower"], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "RAY_DEDUP_LOGS": "0"})
    line = next((ln for ln in flower.stdout.splitlines() if ln.startswith("FLOWER ")), None)
    if line is None:
        raise SystemExit(f"Flower's simulation failed:\n{flower.stdout[-3000:]}\n{flower.stderr[-3000:]}")
    theirs = json.loads(line[len("FLOWER "):])
    ours = run_fedfunc()
    for name, r in ((f"Flower {theirs['version']} simulation", theirs), ("fedfunc (real system)", ours)):
        print(f"{name:<28} wall {r['wall_s']:6.2f} s (with start-up {r['observed_s']:6.1f} s)  "
              f"final accuracy {r['accuracy'][-1]:.4f}  per round {' '.join(f'{a:.3f}' for a in r['accuracy'])}")
    print(f"fedfunc / Flower wall time: {ours['wall_s'] / theirs['wall_s']:.2f}×")


if __name__ == "__main__":
    main()
