"""Durability: `kill -9` mid-wait and mid-activity, restart on the same state, carry on.
A corrupt or foreign state file stops the host at start with a clear error."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
from host_helpers import APPS, features_env, finished, lines, start

from fedfunc.host.testing import HostProcess, wait_until


@pytest.fixture
def host(tmp_path, azurite):
    """The storage watcher here learns of changes from Azurite's data folder (and lists at start)."""
    (tmp_path / "out").mkdir()
    process = HostProcess(APPS / "features", tmp_path / "state.sqlite", env=features_env(tmp_path / "out", azurite),
                          args=("--watch", str(azurite.data_dir), "--poll-interval", "3600"))
    process.out = tmp_path / "out"
    yield process
    process.stop()


def test_kill_9_while_waiting_for_an_event_and_a_timer(host):
    host.start()
    event_wait = start(host, "waiter", "k-event")
    timer_wait = start(host, "waiter", "k-timer", 2.0)
    wait_until(lambda: requests.get(event_wait["statusQueryGetUri"]).json()["runtimeStatus"] == "Running")
    host.kill()
    host.start()  # same port, same state
    assert requests.get(event_wait["statusQueryGetUri"]).json()["customStatus"] == {"stage": "waiting"}
    assert requests.post(event_wait["sendEventPostUri"].replace("{eventName}", "go"), json="after restart").status_code == 202
    assert finished(event_wait)["output"] == {"event": "after restart"}
    assert finished(timer_wait)["output"] == {"timer": True}


def test_activity_in_flight_at_kill_time_runs_again(host):
    host.start()
    payload = start(host, "slow", "k-activity", 1.5)
    wait_until(lambda: lines(host.out, "sleepy-start"), what="activity started")
    host.kill()
    host.start()
    status = finished(payload)
    assert status["runtimeStatus"] == "Completed" and status["output"] == "slept 1.5"
    assert len(lines(host.out, "sleepy-start")) == 2  # at-least-once: re-run after the crash


def test_timer_due_while_down_fires_after_restart(host):
    host.start()
    payload = start(host, "waiter", "k-due", 0.5)
    host.kill()
    time.sleep(0.8)
    host.start()
    assert finished(payload)["output"] == {"timer": True}


def _run_host(app, state):
    return subprocess.run([sys.executable, "-m", "fedfunc", "host", str(app), "--state", str(state), "--port", "1"],
                          capture_output=True, text=True, timeout=60)


def test_foreign_or_corrupt_state_file_is_refused(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    result = _run_host(APPS / "standard", garbage)
    assert result.returncode == 2 and str(garbage) in result.stderr and "not a fedfunc host state" in result.stderr

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    result = _run_host(APPS / "standard", foreign)
    assert result.returncode == 2 and "customers" in result.stderr
    assert garbage.read_bytes().startswith(b"this is not a database")  # nothing overwritten


def test_blob_written_while_down_gives_exactly_one_event_after_restart(host, azurite):
    from azure.storage.blob import BlobServiceClient
    account = azurite.silo_accounts[3]
    container = BlobServiceClient.from_connection_string(account.connection_string).get_container_client("downtime")
    if not container.exists():
        container.create_container()
    host.start()
    spec = {"function": "on_event", "connection": account.connection_string, "container": "downtime"}
    assert requests.put(host.url("/runtime/webhooks/eventgrid/subscriptions/down"), json=spec,
                        headers=host.headers).status_code == 200
    time.sleep(1.1)  # blob times have one-second resolution
    host.kill()
    container.upload_blob("while-down.bin", b"x", overwrite=True)
    host.start()

    def events():
        return [e for e in lines(host.out, "on_event") if e["subject"].endswith("/while-down.bin")]
    wait_until(events, what="event for the blob written while down")
    host.kill()  # and again: the watcher must not emit it a second time
    host.start()
    container.upload_blob("later.bin", b"y", overwrite=True)  # its event proves the watcher listed again
    wait_until(lambda: [e for e in lines(host.out, "on_event") if e["subject"].endswith("/later.bin")],
               what="event for a later blob")
    assert len(events()) == 1


def test_a_host_started_with_sigint_ignored_still_stops_gracefully(tmp_path, azurite):
    """A process started in the background by a non-interactive shell inherits SIGINT ignored. The host's
    stop (SIGTERM) still ends it gracefully and at once: exit status 0 and its ready file removed, where a
    kill after the wait would leave both wrong (a wait of 10 s per host, 100 s over the suite)."""
    (tmp_path / "out").mkdir()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the host process
    try:
        host = HostProcess(APPS / "features", tmp_path / "state.sqlite", env=features_env(tmp_path / "out", azurite))
        host.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert host.ready_path.exists()
    began = time.monotonic()
    host.stop()
    assert (host.proc.returncode, host.ready_path.exists()) == (0, False)
    assert time.monotonic() - began < 5
