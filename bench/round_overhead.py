"""Orchestration overhead per round, with where each round's time went, at 1, 3, 10, 30 and 100 silos.

Runs the real system (Azurite + the Function App on ``fedfunc host`` + local silos through the local
backend) and reads each round's timeline from the run's ``report.json`` — timestamps the components
recorded themselves (the round orchestration's clock, the start_silo_job activity, the silo job, the
BlobCreated event, the on_update trigger). Nothing here times anything on its own. "evaluate" is what
pooling the silos' evaluations adds after aggregation, beside which it runs (the final evaluate-only round
is not counted).

overhead = round wall time − critical path of silo work, where a silo's work runs from a worker
starting its job (or, if the job waited for a busy worker pool, from when it started waiting) to its
update landing, and the critical path is the longest of those. What is left is what fedfunc adds:
manifest, tickets and submission, starting a job on an idle worker, event delivery, aggregation and
evaluation. The columns after ``overhead`` break the round down (to the critical job's start, from its
landing to the round, aggregation, evaluation: they sum to the wall time with its work) and give the
medians over silos of each step (plan, submit, idle worker start, event delivered, raised, train, upload).

    .venv/bin/python bench/round_overhead.py [--silos 1 3 10 30 100] [--rounds 3] [--epochs 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedfunc import layout  # noqa: E402
from fedfunc.devstack import DevStack  # noqa: E402
from fedfunc.tasks.builtin.datasets import silo_parts  # noqa: E402

HP = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}


def _t(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _s(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def round_figures(timeline: dict) -> dict:
    """One round's wall time, critical silo path, overhead and breakdown (seconds) from its timeline."""
    t = {k: _t(v) for k, v in timeline.items() if k != "silos"}
    silos = {s: {k: _t(v) for k, v in st.items()} for s, st in timeline["silos"].items()}
    work = {s: _s(st.get("queued") or st["started"], st["landed"]) for s, st in silos.items()
            if st.get("started") and st.get("landed")}
    critical = max(work, key=work.get)
    c = silos[critical]
    end = max(t["aggregated"], t["evaluated"])  # the round ends with the later of the two
    wall = _s(t["started"], end)
    return {
        "wall": wall, "critical": work[critical], "overhead": wall - work[critical],
        # the breakdown sums to the wall time
        "to_start": _s(t["started"], c.get("queued") or c["started"]), "silo_work": work[critical],
        "to_collected": _s(c["landed"], t["collected"]), "aggregate": _s(t["collected"], t["aggregated"]),
        "evaluate": _s(t["aggregated"], end),
        # and its parts, over every silo (medians)
        "plan": _s(t["started"], t["planned"]), "submit": _s(t["planned"], t["submitted"]),
        "idle_start": statistics.median(_s(st["submitted"], st["started"]) for st in silos.values()
                                        if st.get("submitted") and st.get("started") and not st.get("queued")),
        "deliver": statistics.median(_s(st["landed"], st["delivered"]) for st in silos.values() if st.get("delivered")),
        "raise": statistics.median(_s(st["delivered"], st["raised"]) for st in silos.values() if st.get("delivered")),
        "train": statistics.median(_s(st["started"], st["trained"]) for st in silos.values() if st.get("trained")),
        "upload": statistics.median(_s(st["trained"], st["landed"]) for st in silos.values() if st.get("trained")),
    }


def run_rounds(stack: DevStack, silos: list[str], rounds: int, hp: dict, deadline: float = 1800) -> dict:
    """Run ``rounds`` plain FedAvg rounds over ``silos``; the run's report."""
    run = stack.start_run({"silos": silos, "rounds": rounds, "round_deadline_s": deadline,
                           "bundle": stack.bundle("digits", hp)})
    status = stack.wait_run(run, timeout=deadline * rounds)
    if status["runtime_status"] != "Completed":
        raise RuntimeError(f"run {run} {status['runtime_status']}: {status.get('error')}")
    return json.loads(stack.download(layout.RUNS, layout.report(run, "json")))


def measure(n_silos: int, rounds: int, hp: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp), pool_size=max(n_silos, 1)) as stack:
        silos = [f"bench-{i}" for i in range(n_silos)]
        stack.add_silos(silos)
        for silo, part in zip(silos, silo_parts("digits", n_silos, alpha=None, seed=0)):
            stack.upload_data(silo, part.files("digits"))
        report = run_rounds(stack, silos, rounds, hp)
    return [round_figures(r["timeline"]) for r in report["rounds"]]


COLUMNS = ("wall", "critical", "overhead", "to_start", "to_collected", "aggregate", "evaluate", "plan", "submit",
           "idle_start", "deliver", "raise", "train", "upload")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--silos", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=HP["epochs"])
    args = p.parse_args()
    hp = {**HP, "epochs": args.epochs}
    print(f"seconds, medians over {args.rounds} rounds; local {hp}")
    print(f"{'silos':>5} " + " ".join(f"{c:>12}" for c in COLUMNS))
    for n in args.silos:
        rows = measure(n, args.rounds, hp)
        med = {c: statistics.median(r[c] for r in rows) for c in COLUMNS}
        print(f"{n:>5} " + " ".join(f"{med[c]:>12.3f}" for c in COLUMNS), flush=True)


if __name__ == "__main__":
    main()
