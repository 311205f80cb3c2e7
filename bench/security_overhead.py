"""The added cost per silo job of the lock-down: ticket issue/verify, bundle signature + file hashes,
policy, egress validation, and the silo's storage round trips (policy read, bundle download, audit trail
read and appends) — next to the job's own start-up and training time on the digits task for scale. Then the
time to onboard a local silo end to end (``POST /api/silos`` → validate, provision, grant, smoke job,
ready) on a running system, the issue's ≤ 10 s goal.

CPU checks are timed in-process (median of N repetitions); the storage part runs against a fresh
Azurite with one provisioned silo, through the same ``admit`` the silo runner calls; onboarding runs
on ``fedfunc.devstack`` (Azurite + the Function App on ``fedfunc host``).
Run: .venv/bin/python bench/security_overhead.py  (≈40 s; Azurite from `make install`)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.security import keys
from fedfunc.security.audit import AuditLog, SiloAuditTrail
from fedfunc.security.bundle import open_bundle, verify_bundle
from fedfunc.security.egress import check_egress
from fedfunc.security.policy import SiloPolicy, enforce, parse_policy
from fedfunc.security.tickets import issue_ticket, verify_ticket
from fedfunc.silo.runner import package
from fedfunc.tasks import loop
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.builtin.datasets import local_silos
from fedfunc.tasks.loader import build_model, from_bundle, load_weights
from fedfunc.tasks.signing import build_bundle
from fedfunc.weights import ModelManifest, model_to_arrays

HP = {"epochs": 1, "lr": 0.05, "batch_size": 32}
ADMIT = "silo: authenticate() + admit() = CPU checks + policy, bundle & trail reads"
APPEND = "silo: audit trail append (one line)"
RECORD = "orchestrator: audit table entry"


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--samples", type=int, default=300, help="training samples of the reference job")
    ap.add_argument("--onboard", type=int, default=3, help="silos to onboard for the timing (0: skip)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    orch, sci = keys.generate(), keys.generate()
    bundle = build_bundle(task_dir("digits"), sci, HP)
    code_hash = open_bundle(bundle).code_hash
    policy = SiloPolicy(silo="alpha", orchestrator_keys=[keys.public_b64(orch.public_key())],
                        trusted_signers=[keys.public_b64(sci.public_key())], allowed_tasks=["digits"],
                        max_rounds_per_day=100)
    raw_policy = policy.model_dump_json().encode()
    task, global_arrays = from_bundle(verify_bundle(bundle, policy.trusted_signers))
    silo = local_silos("digits", 1, alpha=None, seed=0)[0]
    train_data, test_data = task.read_data(silo.train), task.read_data(silo.test)
    train_data = torch.utils.data.Subset(train_data, range(min(args.samples, len(train_data))))

    def train():
        model = build_model(task)
        load_weights(model, global_arrays)
        return model, loop.train(task, model, train_data, seed=0)

    ticket_args = dict(run="bench", round=1, silo="alpha", code_hash=code_hash, nonce="n")
    request = SiloJobRequest(run_id="bench", round=1, silo="alpha", nonce="n", task="digits",
                             model_url="http://x/m", model_sha256="0" * 64,
                             outbox_prefix=layout.outbox_prefix("bench", 1, "alpha"),
                             ticket=issue_ticket(orch, **ticket_args), bundle=code_hash)
    model, stats = train()
    arrays = model_to_arrays(model)
    artifacts = package(request, loop.evaluate(task, model, test_data), arrays,
                        {"loss": stats.loss, "num_samples": stats.num_samples, "epochs": stats.epochs})
    manifest = ModelManifest.from_arrays(global_arrays)
    expected = {"run": "bench", "round": 1, "silo": "alpha", "nonce": "n"}
    n = args.repeat

    rows = [
        ("orchestrator: issue ticket", median_ms(lambda: issue_ticket(orch, **ticket_args), n)),
        ("silo: parse policy + enforce", median_ms(lambda: enforce(parse_policy(raw_policy), request, 0), n)),
        ("silo: verify bundle (signature + every file)", median_ms(
            lambda: verify_bundle(bundle, policy.trusted_signers, expected_hash=code_hash), n)),
        ("silo: verify ticket", median_ms(lambda: verify_ticket(request.ticket, policy.orchestrator_keys,
                                                               silo="alpha", run="bench", round=1,
                                                               code_hash=code_hash, nonce="n"), n)),
        ("silo: egress check (update + metrics + evaluation)", median_ms(lambda: check_egress(
            artifacts, mode="train", manifest=manifest, num_classes=10, expected=expected), n)),
    ]
    cpu_total = sum(ms for name, ms in rows if name.startswith("silo"))
    train_ms = median_ms(train, 5)
    startup_ms = median_ms(lambda: subprocess.run(
        [sys.executable, "-c", "import fedfunc.silo.runner, fedfunc.tasks.loop"], check=True), 3)
    storage = dict(storage_round_trips(orch, sci, bundle, n=20))

    print(f"security overhead per silo job (median of {n}; digits MLP, {sum(a.size for a in arrays.values())} "
          f"parameters, update {len(artifacts[layout.UPDATE])} bytes)")
    for name, ms in rows:
        print(f"  {name:<44} {ms:8.3f} ms")
    print(f"  {'silo CPU checks, total':<44} {cpu_total:8.3f} ms")
    for name, ms in storage.items():
        print(f"  {name:<44} {ms:8.3f} ms")
    egress_ms = dict(rows)["silo: egress check (update + metrics + evaluation)"]
    added = storage[ADMIT] + egress_ms + 3 * storage[APPEND]
    print(f"added per silo job: admit + egress + 3 trail appends = {added:.1f} ms; per round on the orchestrator: "
          f"{dict(rows)['orchestrator: issue ticket'] + storage[RECORD]:.1f} ms per silo (ticket + audit entry)")
    print(f"for scale: a silo job process starts in {startup_ms:.0f} ms (Python + torch + task imports); "
          f"training {args.samples} samples for 1 epoch takes {train_ms:.1f} ms")
    if args.onboard:
        times = onboarding_seconds(args.onboard)
        print("onboarding a local silo end to end over HTTP: " + ", ".join(f"{t:.2f} s" for t in times)
              + f" (median {statistics.median(times):.2f} s; goal ≤ 10 s)")


def onboarding_seconds(n: int) -> list[float]:
    """Wall time of ``DevStack.add_silo`` (POST /api/silos, then poll until ready) for ``n`` new silos."""
    from fedfunc.devstack import DevStack

    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp)) as stack:
        times = []
        for i in range(n):
            t = time.perf_counter()
            stack.add_silo(f"bench-{i + 1}")
            times.append(time.perf_counter() - t)
        return times


def storage_round_trips(orch, sci, bundle: bytes, n: int) -> list[tuple[str, float]]:
    """``admit`` against a real silo account (policy blob, bundle download + verification, trail read), and
    one trail append."""
    from azure.storage.blob import BlobServiceClient

    from fedfunc.azurite import Azurite
    from fedfunc.silo.home import read_credentials, silo_home
    from fedfunc.silo.io import BlobSiloIO
    from fedfunc.silo.local import provision_local_silo
    from fedfunc.silo.runner import admit, authenticate
    from fedfunc.storage import table_service

    with tempfile.TemporaryDirectory() as tmp, Azurite(Path(tmp) / "azurite") as az:
        policy = SiloPolicy(silo="alpha", orchestrator_keys=[keys.public_b64(orch.public_key())],
                            trusted_signers=[keys.public_b64(sci.public_key())], allowed_tasks=["digits"],
                            max_rounds_per_day=1000)
        provision_local_silo("alpha", azurite_home=az.location, orchestrator_conn=az.orchestrator.connection_string,
                             home_root=Path(tmp) / "home", initial_policy=policy)
        creds = read_credentials(silo_home(Path(tmp) / "home", "alpha"))
        io = BlobSiloIO.of(creds)
        code_hash = open_bundle(bundle).code_hash
        bundles = BlobServiceClient.from_connection_string(az.orchestrator.connection_string)
        bundles.create_container(layout.BUNDLES)
        bundles.get_blob_client(layout.BUNDLES, layout.bundle(code_hash)).upload_blob(bundle)
        trail = SiloAuditTrail(io.outbox, "alpha")
        request = SiloJobRequest(run_id="bench", round=1, silo="alpha", nonce="n", task="digits",
                                 model_url="http://x/m", model_sha256="0" * 64,
                                 outbox_prefix=layout.outbox_prefix("bench", 1, "alpha"),
                                 ticket=issue_ticket(orch, run="bench", round=1, silo="alpha",
                                                     code_hash=code_hash, nonce="n"),
                                 bundle=code_hash)
        for i in range(n):  # a trail with n earlier jobs today
            trail.append("job_started", run="bench", round=i + 2, job=f"bench-r{i + 2}-alpha")
        audit = AuditLog.create(table_service(az.orchestrator.connection_string))
        return [(ADMIT, median_ms(lambda: admit(request, authenticate(request, io), io, trail), n)),
                (APPEND, median_ms(lambda: trail.append("job_started", run="bench", round=1, job=request.job_key), n)),
                (RECORD, median_ms(lambda: audit.record("ticket_issued", run="bench", round=1, silo="alpha"), n))]


if __name__ == "__main__":
    main()
