"""Chaos on the real system: every storage request of the app, the host and the silos goes through a proxy
that injects transient faults (503s, server timeouts, connections dropped before or after storage applied
the request, slow answers); mid-run a silo's training process is killed and Azurite itself is killed and
restarted (stopped with SIGTERM: see ``chaos_run``). The run completes, every update that left a silo is counted exactly once, and nothing in the
audit trail or the aggregate records is missing or doubled."""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from fedfunc import layout, weights
from fedfunc.azurite import Azurite
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.devstack import DevStack
from fedfunc.security.audit import AuditLog
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.storage import blob_service, table_service
from fedfunc.tasks.builtin.datasets import silo_parts
from tests.chaos.faultproxy import FaultProxy

SILOS = ("chaos-1", "chaos-2", "chaos-3")
HP = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}
pytestmark = pytest.mark.slow


def proxied_stack(root: Path, *, rate: float, budget: int, seed: int) -> tuple[DevStack, dict[str, FaultProxy]]:
    """A dev stack whose storage clients all reach Azurite through fault proxies (blob and table)."""
    azurite = Azurite(root / "azurite")

    def listening(name: str) -> Callable[[], int]:  # where Azurite listens now: known once it has started
        return lambda: json.loads(azurite._config_path.read_text())["listen_ports"][name]
    proxies = {name: FaultProxy(listening(name), rate=rate, budget=budget, seed=seed + i).start()
               for i, name in enumerate(("blob", "table"))}
    azurite.serve_through({name: p.port for name, p in proxies.items()})  # Azurite binds its own ports: no gap
    return DevStack(root).start(), proxies


def worker_of(supervisor: int, timeout: float = 30) -> int | None:
    """The training process a silo job's supervisor started, once it exists (None if the job ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == supervisor:
                    return int(stat.parent.name)
            except (OSError, ValueError, IndexError):
                continue
        if not Path(f"/proc/{supervisor}").exists():
            return None
        time.sleep(0.05)
    return None


def check_nothing_lost_or_doubled(stack: DevStack, run: str, status: dict) -> Counter:
    """Every update in a silo's outbox was accepted once with its hash; the trail has one entry per fact."""
    outcomes = Counter()
    entries = Counter((e.kind, e.round, e.silo) for e in AuditLog.create(
        table_service(stack.azurite.orchestrator.connection_string)).query(run=run))
    for r in status["history"]:
        record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, r["round"])))
        assert record["model"]["path"] == layout.global_model(run, r["round"] + 1)
        for silo in SILOS:
            own = blob_service(read_credentials(silo_home(stack.home, silo)).connection_string)
            blob = own.get_blob_client(layout.OUTBOX, layout.outbox_prefix(run, r["round"], silo) + layout.UPDATE)
            state = r["silos"][silo]["state"]
            outcomes[state] += 1
            assert entries["ticket_issued", r["round"], silo] == 1, sorted(entries.items())
            if blob.exists():  # it left the silo: it must have been received, once, as it was
                assert state == "received" and silo in record["accepted"], (r, silo)
                assert record["received"][silo]["sha256"] == weights.sha256(blob.download_blob().readall())
                assert entries["artifact_received", r["round"], silo] == 1
            else:
                assert state == "failed" and entries["artifact_received", r["round"], silo] == 0, (r, silo)
    return outcomes


def chaos_run(root: Path, *, rounds: int, rate: float, budget: int, seed: int, kill: bool = True) -> dict:
    """One run under faults (and, with ``kill``, chaos-2's worker killed in round 0 while its update upload
    is held at the proxy, and Azurite stopped and restarted right after, while the round collects: with warm
    workers a later round can be over before a test sees it start); returns what happened. Shared with
    ``bench/chaos.py``."""
    t0 = time.monotonic()
    mark = lambda what: print(f"[chaos] {time.monotonic() - t0:6.1f}s {what}")  # noqa: E731
    stack, proxies = proxied_stack(root, rate=0.0, budget=budget, seed=seed)  # faults once the run starts
    mark("stack up")
    try:
        for silo, part in zip(SILOS, silo_parts("digits", len(SILOS), alpha=None, seed=0)):
            stack.add_silo(silo)
            stack.upload_data(silo, part.files("digits"))
        mark("silos onboarded")
        for proxy in proxies.values():
            proxy.rate = rate
        bundle = stack.bundle("digits", HP)
        run_id, held = f"chaos-{seed}", None
        if kill:  # chaos-2's round-0 update never reaches storage: its worker dies at a known step, not raced
            account = read_credentials(silo_home(stack.home, "chaos-2")).account
            upload = f"PUT /{account}/{layout.OUTBOX}/{layout.outbox_prefix(run_id, 0, 'chaos-2')}{layout.UPDATE}"
            held = proxies["blob"].hold(upload.encode())
        run = stack.start_run({"silos": list(SILOS), "rounds": rounds, "quorum": 0.6, "round_deadline_s": 240,
                               "run_id": run_id, "bundle": bundle})
        killed = {}
        if kill:
            assert held.wait(240), "chaos-2's round-0 update upload never reached the proxy"
            collecting = stack.wait_round(run, 0, timeout=60)
            supervisor = LocalProcessBackend(stack.home).pid(collecting["current_round"]["jobs"]["chaos-2"])
            worker = worker_of(supervisor)
            assert worker is not None, f"no training process under chaos-2's supervisor {supervisor}"
            os.kill(worker, signal.SIGKILL)
            killed["worker"] = worker
            mark("round 0: worker killed")
            # Storage gone mid-round: every client meets refused connections until it is back. SIGTERM, not
            # SIGKILL: Azurite keeps its metadata in memory and saves it every few seconds (LokiJS), so a
            # SIGKILL loses the emulator's last writes, which no real storage account does.
            stack.azurite.stop()
            stack.azurite.start()
            killed["azurite"] = True
            mark("azurite restarted")
        status = stack.wait_run(run, timeout=600)
        mark("run ended")
        assert status["runtime_status"] == "Completed", status
        outcomes = check_nothing_lost_or_doubled(stack, run, status)
        faults = sum((p.counts for p in proxies.values()), Counter())
        return {"status": status, "outcomes": outcomes, "faults": faults, "killed": killed}
    finally:
        stack.stop()
        for p in proxies.values():
            p.stop()


def test_run_survives_storage_faults_a_killed_worker_and_a_killed_azurite(tmp_path):
    result = chaos_run(tmp_path, rounds=2, rate=0.05, budget=10, seed=1)
    faults = result["faults"]
    print(f"faults injected: {dict(faults)}; outcomes {dict(result['outcomes'])}; killed {result['killed']}")
    assert sum(faults[f] for f in ("busy", "timeout", "drop_before", "drop_after", "slow")) >= 5
    outcome = result["status"]["history"][0]["silos"]["chaos-2"]  # the silo whose worker died says so
    assert outcome["state"] == "failed" and "SIGKILL" in (outcome.get("reason") or ""), outcome
