"""Time the hardening adds per round: the event check (is the blob an event names really in the silo's
outbox, with its eTag and size?) and the bound on updates (‖update − global‖₂ against the run's bound;
with ``max_update_norm_vs_median``, a second read of every update).

Against a real Azurite: one local silo provisioned as onboarding does, an update in its outbox, the
orchestrator's outbox read SAS. Prints medians of ``--repeat`` calls and what they add to a round of
3 and 10 silos.

    .venv/bin/python bench/hardening_overhead.py [--repeat 50]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fedfunc import layout, weights
from fedfunc.aggregation.sources import BytesBlob
from fedfunc.azurite import Azurite
from fedfunc.coordinator import rounds
from fedfunc.coordinator.bundles import store_bundle
from fedfunc.coordinator.services import Services
from fedfunc.coordinator.store import RunStore
from fedfunc.protocol import AggregateOrder, RoundJob, RunState, UpdateNotice
from fedfunc.registry import SiloRegistry
from fedfunc.security import keys
from fedfunc.security.policy import SiloPolicy
from fedfunc.security.update_bound import default_bound
from fedfunc.settings import load_settings
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.local import provision_local_silo
from fedfunc.spec import RunSpec
from fedfunc.storage import blob_service, table_service
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.signing import build_bundle, prepare


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def event_check(az: Azurite, home: Path, n: int) -> float:
    conn = az.orchestrator.connection_string
    policy = SiloPolicy(silo="bench-silo", orchestrator_keys=[keys.public_b64(keys.generate().public_key())])
    record = provision_local_silo("bench-silo", azurite_home=az.location, orchestrator_conn=conn, home_root=home,
                                  initial_policy=policy)
    SiloRegistry.create(table_service(conn)).put(record.model_copy(update={"status": "ready"}))
    path = layout.outbox_prefix("bench", 0, "bench-silo") + layout.UPDATE
    blob_service(read_credentials(silo_home(home, "bench-silo")).connection_string).get_blob_client(
        layout.OUTBOX, path).upload_blob(b"x" * 1000, overwrite=True)
    svc = Services(load_settings({"FEDFUNC_STORAGE": conn}))
    svc.outbox_blob(svc.registry.get("bench-silo"), path)  # warm: client
    return median_ms(lambda: svc.outbox_blob(svc.registry.get("bench-silo"), path), n)


def bound(n: int) -> list[tuple[str, float, float]]:
    """validate_update without and with the run's bound, for the digits model and a 10M-float32 model."""
    rows = []
    for name, arrays in (("digits MLP (4.8K params)", prepare(task_dir("digits")).initial),
                         ("10M float32 params", {"w": np.random.default_rng(0).standard_normal(10_000_000, np.float32)})):
        meta = {"run": "b", "round": "0", "silo": "s", "nonce": "n", "num_samples": "10"}
        data = weights.encode({k: v + np.float32(0.01) for k, v in arrays.items()}, meta)
        manifest, limit = weights.ModelManifest.from_arrays(arrays), default_bound(arrays).max_norm
        check = lambda norm: weights.validate_update(data, manifest, expected=meta, global_arrays=arrays,  # noqa: E731
                                                     max_norm=norm, max_bytes=len(data))
        reps = n if len(data) < 1 << 20 else max(3, n // 10)
        rows.append((name, median_ms(lambda: check(None), reps), median_ms(lambda: check(limit), reps)))
    return rows


def median_rule(az: Azurite, n: int) -> tuple[float, float]:
    """aggregate_round for 3 digits updates, without and with max_update_norm_vs_median (reads in memory)."""
    store = RunStore(blob_service(az.orchestrator.connection_string))
    silos = ["a-silo", "b-silo", "c-silo"]
    bundle = build_bundle(task_dir("digits"), keys.generate(), clip_norm="off")
    code_hash = store_bundle(store, bundle, len(bundle))[0].code_hash
    out = []
    for rule in (None, 3.0):
        spec = RunSpec(task="digits", bundle=code_hash, silos=silos, max_update_norm_vs_median=rule)
        times = []
        for i in range(max(3, n // 5)):
            run = f"bench-median-{rule}-{i}"
            start = rounds.init_run(store, RunState(run_id=run, spec=spec))
            job = RoundJob(run_id=run, round=0, nonce="n", model=start.model, spec=spec, update_bound=start.update_bound)
            job = job.model_copy(update={"manifest": rounds.prepare_round(store, silos, job).manifest})
            g = rounds.load_global(store, job.model)
            blobs = {s: weights.encode({k: v * (1.1 + j / 10) for k, v in g.items()}, {
                "run": run, "round": "0", "silo": s, "nonce": "n", "num_samples": "100"}) for j, s in enumerate(silos)}
            read = lambda silo, path, max_bytes: b'{"num_samples": 100}'  # noqa: E731  (the metrics)
            order = AggregateOrder(job=job, updates={s: UpdateNotice(path=f"{s}/{layout.UPDATE}") for s in silos})
            t = time.perf_counter()
            rounds.aggregate_round(store, read, lambda silo, path: BytesBlob(blobs[silo]), order)
            times.append((time.perf_counter() - t) * 1000)
        out.append(statistics.median(times))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedfunc-bench-") as tmp, Azurite(Path(tmp) / "azurite") as az:
        check = event_check(az, Path(tmp) / "home", args.repeat)
        print(f"event check (blob properties in the silo's outbox, read SAS): {check:.2f} ms per event; "
              f"per round {3 * check:.1f} ms at 3 silos, {10 * check:.1f} ms at 10 (one update event each)")
        for name, without, with_ in bound(args.repeat):
            print(f"validate_update, {name}: {without:.2f} ms without a bound, {with_:.2f} ms with the default "
                  f"bound (+{with_ - without:.2f} ms per update: the norm comes from the same fused pass)")
        plain, ruled = median_rule(az, args.repeat)
        print(f"aggregate_round, 3 digits updates: {plain:.1f} ms; with max_update_norm_vs_median {ruled:.1f} ms "
              f"(+{ruled - plain:.1f} ms: a measuring block pass before the strategy's)")


if __name__ == "__main__":
    main()
