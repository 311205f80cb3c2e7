"""Data uploads into silos start retraining: a burst of uploads starts one run, not one per upload,
and uploads that land while a run trains start the next one."""
from __future__ import annotations

import json

import pytest
from e2e_helpers import CutOff, instance_status, own_outbox, wait_instance

from fedfunc import layout
from fedfunc.devstack import DevStack
from fedfunc.host.events import EVENT_RAISED, SUB_CREATED
from fedfunc.host.testing import wait_until
from fedfunc.security.bundle import open_bundle
from fedfunc.silo.io import BlobOutbox
from fedfunc.silo.runner import report_failure
from fedfunc.storage import blob_service
from fedfunc.tasks.builtin.datasets import silo_parts
from orchestrations.retraining import DEBOUNCER, UPLOAD_EVENT

SILOS = ("up-1", "up-2")


@pytest.fixture(scope="module")
def retrain_stack(tmp_path_factory):
    stack = DevStack(tmp_path_factory.mktemp("retrain"))
    bundle = stack.sign("digits", {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0})
    spec = {"silos": "all", "rounds": 1, "round_deadline_s": 120, "bundle": open_bundle(bundle).code_hash}
    stack.host.env.update(FEDFUNC_RETRAIN_SPEC=json.dumps(spec), FEDFUNC_RETRAIN_QUIET_S="3")
    with stack:
        stack.upload_bundle(bundle)
        for silo in SILOS:
            stack.add_silo(silo)
        yield stack


def retraining_runs(stack) -> set[str]:
    return {r["run"] for r in stack.api("GET", "/api/runs")["runs"] if r["run"].startswith("retrain-")}


def wait_new_run(stack, known: set[str], timeout: float = 60) -> str:
    return min(wait_until(lambda: retraining_runs(stack) - known, timeout, interval=0.2, what="a new retraining run"))


def test_a_burst_of_uploads_starts_one_retraining_run(retrain_stack):
    stack = retrain_stack
    known = retraining_runs(stack)
    parts = silo_parts("digits", 2, alpha=None, seed=1)
    for silo, part in zip(SILOS, parts):  # three uploads (of two files each) within the quiet period
        stack.upload_data(silo, part.files("digits"))
    stack.upload_data(SILOS[0], parts[0].files("digits"))
    run = wait_new_run(stack, known)
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    assert set(status["history"][0]["silos"]) == set(SILOS)
    # The debouncer ended with that run (no upload came during it): this burst can start no other.
    debouncer = wait_instance(stack, DEBOUNCER, "Completed")["output"]
    assert debouncer["run"] == run
    assert 4 <= debouncer["uploads"] <= 6  # two files each; the watcher may see up-1's quick rewrites as one
    assert retraining_runs(stack) == known | {run}


def heard_upload_during_training(stack, silo: str) -> bool:
    """The debouncer's history has ``silo``'s upload after it started its training run."""
    events = instance_status(stack, DEBOUNCER).get("historyEvents") or []
    started = next((i for i, e in enumerate(events) if e["EventType"] == SUB_CREATED), None)
    return started is not None and any(e["EventType"] == EVENT_RAISED and e.get("Name") == UPLOAD_EVENT
                                       and silo in (e.get("Input") or "") for e in events[started:])


def test_an_upload_during_retraining_starts_the_next_run(retrain_stack, refused_port):
    """The first run is held open by a silo whose jobs cannot write (the gate) until the debouncer has
    the upload that lands during it, so the upload never races the run."""
    stack, gate = retrain_stack, SILOS[1]
    known = retraining_runs(stack)
    files = silo_parts("digits", 2, alpha=None, seed=2)[0].files("digits")
    cut_off = CutOff(stack, refused_port)
    creds = cut_off(gate)
    try:
        own = blob_service(creds.connection_string).get_container_client(layout.DATA)
        for path, data in files.items():  # the gate's owner uploads, with its own key
            own.upload_blob(path, data, overwrite=True)
        first = wait_new_run(stack, known)
        stack.wait_round(first, 0)
        stack.upload_data(SILOS[0], files)  # lands while `first` trains
        wait_until(lambda: heard_upload_during_training(stack, SILOS[0]), 60, interval=0.2,
                   what="the debouncer hearing the upload during training")
        stack.api("POST", f"/api/silos/{gate}/disable", role="admin")  # the next run trains without it
        report_failure(BlobOutbox(own_outbox(creds)), layout.outbox_prefix(first, 0, gate), "held by the test", None)
        assert stack.wait_run(first, timeout=300)["runtime_status"] == "Completed"
        second = wait_new_run(stack, known | {first})
        status = stack.wait_run(second, timeout=300)
        assert status["runtime_status"] == "Completed", status
        assert set(status["history"][0]["silos"]) == {SILOS[0]}
        debouncer = wait_instance(stack, DEBOUNCER, "Completed")["output"]
        assert (debouncer["run"], debouncer["uploads"]) == (second, 1)
        assert retraining_runs(stack) == known | {first, second}
    finally:
        cut_off.restore(gate)
        stack.add_silo(gate)  # ready again, for whichever test comes next

