"""Data uploads into silos start retraining: a burst of uploads starts one run, not one per upload,
and uploads that land while a run trains start the next one."""
from __future__ import annotations

import json
import time

import pytest

from fedfunc.devstack import DevStack
from fedfunc.tasks.partition import partition

SILOS = ("up-1", "up-2")


@pytest.fixture(scope="module")
def retrain_stack(tmp_path_factory):
    stack = DevStack(tmp_path_factory.mktemp("retrain"))
    spec = {"task": "digits", "silos": "all", "rounds": 1, "round_deadline_s": 120,
            "bundle": stack.signed_bundle("digits", {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0})}
    stack.host.env.update(FEDFUNC_RETRAIN_SPEC=json.dumps(spec), FEDFUNC_RETRAIN_QUIET_S="3")
    with stack:
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


def test_a_burst_of_uploads_starts_one_retraining_run(retrain_stack, digits):
    stack = retrain_stack
    assert retraining_runs(stack) == []  # the schedule is off by default; onboarding uploads no data
    parts = partition(digits.y_train, 2, alpha=None, seed=1)
    for silo, idx in zip(SILOS, parts):  # three uploads within the quiet period
        stack.upload_data(silo, "digits", digits.x_train[idx], digits.y_train[idx])
    stack.upload_data(SILOS[0], "digits", digits.x_train[parts[0]], digits.y_train[parts[0]])
    run = _wait_new_run(stack, set())
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    assert set(status["history"][0]["silos"]) == set(SILOS)
    assert len(retraining_runs(stack)) == 1


def test_an_upload_during_retraining_starts_the_next_run(retrain_stack, digits):
    stack = retrain_stack
    known = {r["run"] for r in retraining_runs(stack)}
    x, y = digits.x_train[:200], digits.y_train[:200]
    stack.upload_data(SILOS[1], "digits", x, y)
    first = _wait_new_run(stack, known)
    stack.upload_data(SILOS[0], "digits", x, y)  # lands while `first` trains
    assert stack.run_status(first)["runtime_status"] in ("Running", "Pending")
    assert stack.wait_run(first, timeout=300)["runtime_status"] == "Completed"
    second = _wait_new_run(stack, known | {first})
    assert stack.wait_run(second, timeout=300)["runtime_status"] == "Completed"
    assert len(retraining_runs(stack)) == len(known) + 2
