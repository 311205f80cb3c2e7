"""Added time per round for MLflow tracking and domain events, at 10 silos.

After each round the run waits for the ``observe`` activity: it keeps the round record, records the round's
facts and delivers them (CloudEvents to the topic, the round's metrics to MLflow). Two measurements:

1. a real run (10 silos, the system as ``fedfunc demo`` runs it: SQLite MLflow store, the host's custom topic
   with one webhook subscriber): the ``observe`` activity's time after each round, from the host's log;
2. in process, the same work for that run's 10-silo rounds on the same storage, MLflow store and topic,
   ``--samples`` rounds per variant: round record only (both sinks off), + events, + MLflow, + both. The
   added time per round is a variant's median minus the round record's.

    flock /tmp/fedfunc-heavy.lock .venv/bin/python bench/observe_overhead.py [--silos 10] [--rounds 3] [--samples 20]
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from azure.core.credentials import AzureKeyCredential

from fedfunc.coordinator.rounds import keep_round_result, round_results
from fedfunc.coordinator.store import RunStore
from fedfunc.devstack import EVENTS_TOPIC, DevStack
from fedfunc.observe.delivery import Observer
from fedfunc.observe.mlflow_tracker import MlflowTracker
from fedfunc.observe.outbox import ObservationOutbox
from fedfunc.observe.publisher import EventGridPublisher
from fedfunc.observe.subscriber import EventSubscriber
from fedfunc.protocol import RoundResult, RunFact
from fedfunc.storage import blob_service, table_service


def real_run(stack: DevStack, n_silos: int, rounds: int) -> tuple[str, list[float]]:
    silos = [f"bench-{i}" for i in range(n_silos)]
    stack.add_silos_with_data(silos)
    hp = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}
    run = stack.start_run({"silos": silos, "rounds": rounds, "round_deadline_s": 600,
                           "bundle": stack.bundle("digits", hp), "run_id": f"observe-{uuid.uuid4().hex[:6]}"})
    assert stack.wait_run(run, timeout=3600)["runtime_status"] == "Completed"
    times = [float(ms) for ms in re.findall(rf"activity observe instance={re.escape(run)} ([0-9.]+)ms", stack.host.log())]
    return run, times   # RunStarted, one per round, RunCompleted


def in_process(stack: DevStack, results: list[RoundResult], samples: int) -> dict[str, list[float]]:
    conn = stack.azurite.orchestrator.connection_string
    store = RunStore(blob_service(conn))
    outbox = ObservationOutbox.create(table_service(conn))
    topic = stack.topic(EVENTS_TOPIC)
    events = EventGridPublisher(topic["endpoint"], AzureKeyCredential(topic["key"]))
    tracking = MlflowTracker(stack.mlflow_uri, "fedfunc-bench", store)
    variants = {"round record only": {}, "+ events": {"events": events}, "+ MLflow": {"tracking": tracking},
                "+ events + MLflow": {"events": events, "tracking": tracking}}
    out = {}
    for name, sinks in variants.items():
        observer, run = Observer(outbox, **sinks), f"inproc-{uuid.uuid4().hex[:8]}"
        times = []
        for i in range(samples + 1):
            result = results[i % len(results)].model_copy(update={"round": i})
            t0 = time.perf_counter()
            keep_round_result(store, run, result)
            observer.record(RunFact(kind="RoundCompleted", run_id=run, at=result.ended, result=result))
            drained = observer.drain()
            times.append((time.perf_counter() - t0) * 1000)
            assert drained.retrying == drained.refused == 0, drained
        out[name] = times[1:]   # the first creates the MLflow run
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--silos", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack, EventSubscriber() as sub:
        stack.subscribe_events("bench", sub.url)
        run, observed = real_run(stack, args.silos, args.rounds)
        print(f"real run {run}: {args.silos} silos, {args.rounds} rounds; observe activity (ms): "
              f"RunStarted {observed[0]:.0f} (first MLflow use in the host process), "
              f"after each round {', '.join(f'{t:.0f}' for t in observed[1:-1])}, RunCompleted {observed[-1]:.0f}")
        print(f"  events the subscriber got for the run: {len(sub.facts(f'runs/{run}'))} distinct, "
              f"{len(sub.delivered(f'runs/{run}'))} deliveries")
        results = [RoundResult.model_validate(r) for r in round_results(RunStore(blob_service(
            stack.azurite.orchestrator.connection_string)), run)]
        timings = in_process(stack, results, args.samples)
    base = statistics.median(timings["round record only"])
    print(f"in process, a {args.silos}-silo round, {args.samples} rounds per variant (ms):")
    print(f"{'variant':<20} {'median':>8} {'p90':>8} {'added':>8}")
    for name, ts in timings.items():
        med, p90 = statistics.median(ts), statistics.quantiles(ts, n=10)[-1]
        print(f"{name:<20} {med:>8.1f} {p90:>8.1f} {med - base:>8.1f}")


if __name__ == "__main__":
    main()
