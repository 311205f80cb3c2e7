"""The round's branches that involve storage or events, end to end: a silo that stays silent until the
deadline, too few ready silos, a job that cannot be submitted, and quorum lost to rejected updates.
Each test brings its own silos and leaves the last good model in place."""
from __future__ import annotations

import json
import shutil

import pytest
from e2e_helpers import forge_nan_update, instance_status, own_outbox

from fedfunc import layout
from fedfunc.silo.home import silo_home


def failed_run(stack, run: str) -> str:
    """Why round 0 of a run failed, after checking the run failed and its report keeps the round-0 model."""
    status = stack.wait_run(run, timeout=120)
    assert status["runtime_status"] == "Failed", status
    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["status"] == "failed" and report["model"]["path"] == layout.global_model(run, 0)
    with pytest.raises(Exception):
        stack.download(layout.MODELS, layout.global_model(run, 1))
    round0 = instance_status(stack, f"{run}:r0")
    assert round0["runtimeStatus"] == "Failed" and round0["output"] in status["error"]
    return round0["output"]


def test_a_silo_that_stays_silent_is_failed_at_the_deadline(stack, spec, own_silo, cut_off):
    silent = own_silo("e2e-silent", data=False)
    creds = cut_off(silent)  # its job can write nothing: no update, no failure note
    run = stack.start_run(spec(silos=[silent], round_deadline_s=3, run_id="e2e-deadline"))
    why = failed_run(stack, run)
    assert why.startswith(f"round 0: 0 update(s) of 1 silo(s), quorum needs 1; {silent}: no result before the deadline ")
    assert list(own_outbox(creds).list_blobs(name_starts_with=layout.outbox_prefix(run, 0, silent))) == []


def test_too_few_ready_silos_fail_the_round_before_any_job(stack, spec, own_silo):
    off = own_silo("e2e-off", data=False)
    stack.api("POST", f"/api/silos/{off}/disable", role="admin")
    run = stack.start_run(spec(silos=[off], run_id="e2e-too-few"))
    assert failed_run(stack, run) == "round 0: 0 ready silo(s), quorum needs 1"
    manifest = json.loads(stack.download(layout.RUNS, layout.round_manifest(run, 0)))
    assert manifest["silos"] == [] and off in manifest["excluded"]
    assert not (stack.home / "jobs" / f"{run}-r0-{off}.request.json").exists()


def test_a_job_that_cannot_be_submitted_fails_its_silo_at_once(stack, spec, own_silo):
    homeless = own_silo("e2e-homeless", data=False)
    shutil.rmtree(silo_home(stack.home, homeless))  # the silo's compute lost its home: nothing to run a job with
    run = stack.start_run(spec(silos=[homeless], run_id="e2e-no-submit"))
    why = failed_run(stack, run)
    assert why.startswith(f"round 0: 0 update(s) of 1 silo(s), quorum needs 1; {homeless}: job submission failed: "
                          f"FileNotFoundError: silo '{homeless}' has no home")


def test_quorum_lost_to_rejected_updates_fails_the_round(stack, spec, own_silo, cut_off):
    forger = own_silo("e2e-forger", data=False)
    creds = cut_off(forger)  # its real job can write nothing; only the forged update lands
    run = stack.start_run(spec(silos=[forger], run_id="e2e-all-rejected"))
    stack.wait_round(run, 0)
    forge_nan_update(stack, run, forger, creds)
    why = failed_run(stack, run)
    assert why.startswith(f"round 0: 0 valid update(s) of 1 silo(s), quorum needs 1; {forger}: ") and "non_finite" in why
    with pytest.raises(Exception):
        stack.download(layout.RUNS, layout.aggregate_record(run, 0))
