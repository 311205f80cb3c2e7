"""AML RunStatusChanged → failed:{silo} for the right round, and only for our own jobs."""
from __future__ import annotations

import pytest

from fedfunc.azure.events import RUN_STATUS_CHANGED, job_failure
from fedfunc.azure.naming import job_name


def data(status="Failed", run="run-7", round_="3", silo="north-eu", run_id=None, key="runStatus"):
    return {"experimentName": f"fedfunc-{run}", "runId": run_id or job_name(run, 3, silo),
            "runTags": {"fedfunc.run": run, "fedfunc.round": round_, "fedfunc.silo": silo}, key: status}


@pytest.mark.parametrize("status", ["Failed", "Canceled"])
def test_failed_or_canceled_job_fails_its_silo(status):
    ev = job_failure(RUN_STATUS_CHANGED, data(status))
    assert ev.instance_id == "run-7:r3" and ev.name == "failed:north-eu"
    assert job_name("run-7", 3, "north-eu") in ev.payload["reason"] and status.lower() in ev.payload["reason"]


def test_documented_pascal_case_key_also_works():
    assert job_failure(RUN_STATUS_CHANGED, data(key="RunStatus")).name == "failed:north-eu"


@pytest.mark.parametrize("event_type,payload", [
    (RUN_STATUS_CHANGED, data("Completed")),
    (RUN_STATUS_CHANGED, data("Running")),
    ("Microsoft.MachineLearningServices.RunCompleted", data()),
    (RUN_STATUS_CHANGED, {**data(), "runTags": {}}),                       # not one of ours
    (RUN_STATUS_CHANGED, data(run_id="someone-elses-job")),                 # tags copied onto another job
    (RUN_STATUS_CHANGED, data(round_="three")),
])
def test_other_events_are_ignored(event_type, payload):
    assert job_failure(event_type, payload) is None
