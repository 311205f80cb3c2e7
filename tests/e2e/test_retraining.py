"""Data uploads into silos start retraining: a burst of uploads starts one run, not one per upload,
and uploads that land while a run trains start the next one."""
from __future__ import annotations

import json
import time

import pytest

from fedfunc.devstack import DevStack
from fedfunc.security.bundle import open_bundle
from fedfunc.tasks.builtin.datasets import silo_parts

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


def retraining_runs(stack) -> list[dict]:
    return [r for r in stack.api("GET", "/api/runs")["runs"] if r["run"].startswith("retrain-")]


def _wait_new_run(stack, known: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [r["run"] for r in retraining_runs(stack) if r["run"] not in known]
        if new:
            return new[0]
        time.sleep(0.5)
    raise AssertionError(f"no new retraining run within {timeout}s")


def test_a_burst_of_uploads_starts_one_retraining_run(retrain_stack):
    stack = retrain_stack
    assert retraining_runs(stack) == []  # the schedule is off by default; onboarding uploads no data
    parts = silo_parts("digits", 2, alpha=None, seed=1)
    for silo, part in zip(SILOS, parts):  # three uploads (of two files each) within the quiet period
        stack.upload_data(silo, part.files("digits"))
    stack.upload_data(SILOS[0], parts[0].files("digits"))
    run = _wait_new_run(stack, set())
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    assert set(status["history"][0]["silos"]) == set(SILOS)
    assert len(retraining_runs(stack)) == 1


def test_an_upload_during_retraining_starts_the_next_run(retrain_stack):
    stack = retrain_stack
    known = {r["run"] for r in retraining_runs(stack)}
    files = silo_parts("digits", 2, alpha=None, seed=2)[0].files("digits")
    stack.upload_data(SILOS[1], files)
    first = _wait_new_run(stack, known)
    stack.upload_data(SILOS[0], files)  # lands while `first` trains
    assert stack.run_status(first)["runtime_status"] in ("Running", "Pending")
    assert stack.wait_run(first, timeout=300)["runtime_status"] == "Completed"
    second = _wait_new_run(stack, known | {first})
    assert stack.wait_run(second, timeout=300)["runtime_status"] == "Completed"
    assert len(retraining_runs(stack)) == len(known) + 2
