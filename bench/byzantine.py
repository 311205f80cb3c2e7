"""One Byzantine silo of five, through the real system: FedAvg against the robust rules.

One ``DevStack`` with 5 silos holding Dirichlet(α)-skewed shares of digits and an evaluator silo with the
held-out set. One silo is the attacker's: its owner set its policy to trust no orchestrator key, so its
real jobs are refused without touching the round, and each round the owner publishes, into the silo's
own outbox, ``global + scale · (w − global)`` where ``w`` is an honest local training of the round's
global model on the silo's own data (same task, hyper-parameters and epochs) — finite and well formed,
with this round's nonce, so only the rule can stop it. The default update bound is off (the bundle is
signed with ``--clip-norm off`` and the spec sets no bound), so the rules are compared on their own.
Strategies at their default options. Prints the held-out accuracy after each round and the final one,
with the attacker and (``--without``) without it (the four honest silos alone).

    flock /tmp/fedfunc-heavy.lock env PYTHONPATH=. .venv/bin/python bench/byzantine.py [--without]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from fedfunc import layout, weights
from fedfunc.devstack import DevStack
from fedfunc.security import keys
from fedfunc.security.policy import parse_policy, write_policy
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.storage import blob_service
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.builtin.datasets import DATA_FILE, load, silo_parts
from fedfunc.tasks.data import DataReader, MemoryDataSource
from fedfunc.tasks.signing import prepare

HELDOUT, ATTACKER = "heldout", "site-5"
RULES = ("fedavg", "trimmed_mean", "median", "krum")


class Attacker:
    """The owner of one silo, publishing a scaled honest update into its own outbox every round."""

    def __init__(self, stack: DevStack, files: dict[str, bytes], hp: dict, scale: float):
        self.stack, self.scale = stack, scale
        self.prepared = prepare(task_dir("digits"), hp)
        task = self.prepared.task
        self.train = task.read_data(DataReader(MemoryDataSource(files), "digits/train/", "attacker/train/"))
        creds = read_credentials(silo_home(stack.home, ATTACKER))
        self.outbox = blob_service(creds.connection_string).get_container_client(layout.OUTBOX)
        policy = parse_policy(blob_service(creds.connection_string).get_blob_client("policy", "policy.json")
                              .download_blob().readall())
        write_policy(creds.connection_string, policy.model_copy(update={
            "orchestrator_keys": [keys.public_b64(keys.generate().public_key())]}), replace=True)

    def poisoned(self, run: str, round_: int) -> tuple[dict[str, np.ndarray], int]:
        from fedfunc.tasks import loop
        from fedfunc.tasks.loader import build_model, load_weights
        from fedfunc.weights import model_to_arrays

        g = weights.decode(self.stack.download(layout.MODELS, layout.global_model(run, round_)))[0]
        model = build_model(self.prepared.task)
        load_weights(model, g)
        stats = loop.train(self.prepared.task, model, self.train, seed=round_)
        w = model_to_arrays(model)
        return {k: (g[k] + self.scale * (w[k].astype(np.float64) - g[k])).astype(g[k].dtype) for k in g}, \
            stats.num_samples

    def attack(self, run: str, rounds: int) -> None:
        for r in range(rounds):
            self.stack.wait_round(run, r, timeout=600)
            arrays, n = self.poisoned(run, r)
            nonce = json.loads(self.stack.download(layout.RUNS, layout.round_manifest(run, r)))["nonce"]
            prefix = layout.outbox_prefix(run, r, ATTACKER)
            self.outbox.upload_blob(prefix + layout.METRICS, json.dumps({"loss": 0.1, "num_samples": n}).encode())
            self.outbox.upload_blob(prefix + layout.UPDATE, weights.encode(arrays, {
                "run": run, "round": str(r), "silo": ATTACKER, "nonce": nonce, "num_samples": str(n)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--scale", type=float, default=-10.0, help="the attacker's multiple of its honest delta")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", default=list(RULES))
    parser.add_argument("--without", action="store_true", help="also run each rule without the attacker")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hp = {"epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    print(f"digits, 5 silos (Dirichlet α={args.alpha}), {args.rounds} rounds × {args.epochs} local epochs, lr "
          f"{args.lr}; {ATTACKER} publishes global + {args.scale:g}·(its honest delta) every round; no bound "
          "(clip off in the bundle, none in the spec); strategies at their default options")
    silos = [f"site-{i + 1}" for i in range(5)]
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack:
        stack.add_silo(HELDOUT)
        stack.upload_data(HELDOUT, {f"digits/test/{DATA_FILE}": load("digits")[1].to_bytes()})
        parts = silo_parts("digits", 5, alpha=args.alpha, seed=args.seed)
        for name, part in zip(silos, parts):
            stack.add_silo(name)
            stack.upload_data(name, part.files("digits"))
        attacker = Attacker(stack, parts[-1].files("digits"), hp, args.scale)
        bundle = stack.bundle("digits", hp, clip_norm="off")
        print(f"{'rule':<13} {'attacker':<8} {'final':>6}  held-out accuracy after each round")
        for rule in args.rules:
            for attacked in (True, False) if args.without else (True,):
                spec = {"bundle": bundle, "silos": silos if attacked else silos[:-1], "evaluators": [HELDOUT],
                        "rounds": args.rounds, "round_deadline_s": 600, "strategy": rule}
                run = stack.start_run(spec)
                thread = threading.Thread(target=attacker.attack, args=(run, args.rounds), daemon=True)
                if attacked:
                    thread.start()
                status = stack.wait_run(run, timeout=3600, interval=1.0)
                if status["runtime_status"] != "Completed":
                    print(f"{rule:<13} {'yes' if attacked else 'no':<8} run {status['runtime_status']}: "
                          f"{status.get('error')}", flush=True)
                    continue
                curve = [h["metrics"]["heldout_accuracy"] for h in status["history"] if h.get("model")]
                outcome = {h["round"]: h["silos"].get(ATTACKER, {}).get("state") for h in status["history"]}
                print(f"{rule:<13} {'yes' if attacked else 'no':<8} {curve[-1]:>6.3f}  "
                      + " ".join(f"{a:.3f}" for a in curve)
                      + (f"  ({ATTACKER}: {sorted(set(outcome.values()) - {None})})" if attacked else ""), flush=True)


if __name__ == "__main__":
    main()
