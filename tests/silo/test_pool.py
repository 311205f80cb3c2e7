"""The warm worker pool: a bounded number of jobs at once, deadlines that hold for running and waiting
jobs, a dead supervisor reported, queued jobs kept across a pool restart, no secret in the pool.

The tests share one home and its one-worker pool (each leaves no job running), as a module."""
import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from fedfunc import layout
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.weights import read_header


@pytest.fixture(scope="module")
def home_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool-home")
    yield root
    LocalProcessBackend(root).stop_pool()


@pytest.fixture
def backend(home_root):
    return LocalProcessBackend(home_root, workers=1)


def _read(service, path: str) -> bytes:
    return service.get_blob_client(layout.OUTBOX, path).download_blob().readall()


def _in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def _hung(job_factory, hanging_server, silo: str, run: str, deadline: datetime):
    return job_factory(silo, run, deadline=deadline,
                       model_url=f"{hanging_server}/fedorch/models/{run}/round-0000/global.safetensors?sig=x")


def _wait_for(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
    return value


def test_a_hung_job_is_stopped_at_its_deadline_and_counts_as_failed(silo_with_data, own_service, job_factory, backend,
                                                                  hanging_server, wait_outbox, wait_job_ended):
    silo_with_data("pool-h")
    deadline = _in(3)
    request = _hung(job_factory, hanging_server, "pool-h", "run-hung", deadline)
    backend.submit(request)
    service = own_service("pool-h")
    assert wait_outbox(service, request.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.FAILED
    failed = json.loads(_read(service, request.outbox_prefix + layout.FAILED))
    assert "deadline" in failed["reason"] and datetime.now(timezone.utc) >= deadline
    wait_job_ended(backend.pid(request.job_key))


def test_jobs_beyond_the_pool_wait_and_one_past_its_deadline_never_starts(silo_with_data, own_service, job_factory,
                                                                         backend, hanging_server, wait_outbox):
    silo_with_data("pool-a")
    silo_with_data("pool-b")
    blocker = _hung(job_factory, hanging_server, "pool-a", "run-wait", _in(120))
    backend.submit(blocker)
    waiting = job_factory("pool-b", "run-wait", deadline=_in(3))
    backend.submit(waiting)
    status = backend.status()
    assert status["workers"] == 1 and status["running"] == [blocker.job_key]
    service = own_service("pool-b")
    assert wait_outbox(service, waiting.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.FAILED
    assert "before a worker was free" in json.loads(_read(service, waiting.outbox_prefix + layout.FAILED))["reason"]
    assert not service.get_blob_client(layout.OUTBOX, waiting.outbox_prefix + layout.METRICS).exists()
    backend.cancel(blocker.job_key)
    _wait_for(lambda: not backend.status()["running"], "the cancelled job still runs")


def test_one_worker_serves_many_silos_one_job_at_a_time(silo_with_data, own_service, job_factory, backend, wait_outbox):
    names = ("pool-c", "pool-d", "pool-e")
    requests = []
    for name in names:
        silo_with_data(name)
        requests.append(job_factory(name, "run-many", deadline=_in(300)))
        backend.submit(requests[-1])
    times = []
    for name, request in zip(names, requests):
        service = own_service(name)
        assert wait_outbox(service, request.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.UPDATE
        meta = read_header(_read(service, request.outbox_prefix + layout.UPDATE))[1]
        times.append({k: datetime.fromisoformat(v) for k, v in meta.items() if k.endswith("_at")})
    assert "queued_at" not in times[0] and all("queued_at" in t for t in times[1:])
    for earlier, later in zip(times, times[1:]):
        assert later["started_at"] > earlier["trained_at"]  # never two at once


def test_a_killed_supervisor_is_reported_by_the_pool(silo_with_data, own_service, job_factory, backend, hanging_server,
                                                      wait_outbox):
    silo_with_data("pool-k")
    request = _hung(job_factory, hanging_server, "pool-k", "run-killed", _in(120))
    backend.submit(request)
    os.kill(backend.pid(request.job_key), signal.SIGKILL)
    service = own_service("pool-k")
    assert wait_outbox(service, request.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.FAILED
    reason = json.loads(_read(service, request.outbox_prefix + layout.FAILED))["reason"]
    assert "supervisor" in reason and "SIGKILL" in reason
    _wait_for(lambda: not backend.status()["running"], "the killed job's slot was not freed")


def test_queued_jobs_outlive_the_pool_and_run_on_the_next(silo_with_data, own_service, job_factory, backend,
                                                         hanging_server, wait_outbox, wait_job_ended):
    silo_with_data("pool-f")
    silo_with_data("pool-g")
    blocker = _hung(job_factory, hanging_server, "pool-f", "run-restart", _in(5))
    queued = job_factory("pool-g", "run-restart", deadline=_in(300))
    backend.submit(blocker)
    backend.submit(queued)
    first = backend.status()["pid"]
    backend.stop_pool()
    wait_job_ended(first)
    assert backend.pid(queued.job_key) is None  # never started
    assert backend.submit(queued) == queued.job_key  # the next pool takes it up (from disk, and once)
    assert wait_outbox(own_service("pool-g"), queued.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.UPDATE
    assert backend.status()["pid"] != first


@pytest.fixture
def secrets_in_env(monkeypatch):
    for name in ("FEDFUNC_STORAGE", "FEDFUNC_ORCHESTRATOR_KEY", "FEDFUNC_API_KEYS", "AZURE_CLIENT_SECRET"):
        monkeypatch.setenv(name, "secret-value")


def test_the_pool_holds_no_setting_of_the_process_that_started_it(silo_with_data, job_factory, backend, secrets_in_env,
                                                                  own_service, wait_outbox, wait_job_ended):
    silo_with_data("pool-s")
    request = job_factory("pool-s", "run-env")
    running = backend.status()
    backend.stop_pool()  # a pool this test's process starts, with the secrets in its environment
    if running:
        wait_job_ended(running["pid"])
    backend.submit(request)
    environ = open(f"/proc/{backend.status()['pid']}/environ", "rb").read()
    assert b"secret-value" not in environ and b"FEDFUNC_SILO_HOME" not in environ
    assert wait_outbox(own_service("pool-s"), request.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.UPDATE
