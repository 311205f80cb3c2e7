"""Orchestration overhead per round: round wall time minus the slowest silo job, at 3 and 10 silos.

Runs the real system (Azurite + the Function App on ``fedfunc host`` + local silo processes). A round's
wall time is its sub-orchestration's created → last-updated time; a silo job's time is from its
process start (the local backend's pid file) to its update blob landing (the blob's last-modified).
What is left is what fedfunc adds: manifest, job submission, event delivery, aggregation, pooling the
silos' evaluations. (The final evaluate-only round is not counted.)

    .venv/bin/python bench/round_overhead.py [--silos 3 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import requests

from fedfunc import layout
from fedfunc.devstack import DevStack
from fedfunc.protocol import round_instance_id
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.storage import blob_service


def _instance_times(stack: DevStack, instance: str) -> tuple[datetime, datetime]:
    r = requests.get(stack.host.url(f"/runtime/webhooks/durabletask/instances/{instance}"), headers=stack.host.headers,
                     timeout=30).json()
    return datetime.fromisoformat(r["createdTime"]), datetime.fromisoformat(r["lastUpdatedTime"])


def _job_seconds(stack: DevStack, run: str, round_: int, silo: str) -> float:
    started = datetime.fromtimestamp(
        (stack.home / "jobs" / f"{run}-r{round_}-{silo}.pid").stat().st_mtime, timezone.utc)
    creds = read_credentials(silo_home(stack.home, silo))
    props = blob_service(creds.connection_string).get_blob_client(
        layout.OUTBOX, layout.outbox_prefix(run, round_, silo) + layout.UPDATE).get_blob_properties()
    return (props.last_modified - started).total_seconds()


def measure(n_silos: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack:
        silos = [f"bench-{i}" for i in range(n_silos)]
        stack.add_silos_with_data(silos)
        hp = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}
        run = stack.start_run({"silos": silos, "rounds": rounds, "round_deadline_s": 600,
                               "bundle": stack.bundle("digits", hp)})
        assert stack.wait_run(run, timeout=3600)["runtime_status"] == "Completed"
        rows = []
        for r in range(rounds):
            created, done = _instance_times(stack, round_instance_id(run, r))
            wall = (done - created).total_seconds()
            slowest = max(_job_seconds(stack, run, r, s) for s in silos)
            rows.append((wall, slowest, wall - slowest))
    return {"silos": n_silos, "round_wall_s": statistics.median(w for w, _, _ in rows),
            "slowest_job_s": statistics.median(s for _, s, _ in rows),
            "overhead_s": statistics.median(o for _, _, o in rows), "rounds": rounds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--silos", type=int, nargs="+", default=[3, 10])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"{'silos':>5} {'round wall s':>13} {'slowest job s':>14} {'overhead s':>11}  (medians over {args.rounds} rounds)")
    for n in args.silos:
        m = measure(n, args.rounds)
        print(f"{m['silos']:>5} {m['round_wall_s']:>13.2f} {m['slowest_job_s']:>14.2f} {m['overhead_s']:>11.2f}")


if __name__ == "__main__":
    main()
