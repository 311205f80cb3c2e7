"""Failures a real deployment meets: crashing silos, too few silos, the host killed mid-run, silos coming and going."""
from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_helpers import forge_nan_update, own_outbox

from fedfunc import layout
from fedfunc.host.testing import wait_until
from fedfunc.silo.io import BlobOutbox
from fedfunc.silo.runner import report_failure
from fedfunc.weights import encode


@pytest.fixture(scope="module")
def broken_silo(stack, module_silo):
    """A silo whose data is not a valid partition: its job fails and says why."""
    module_silo("site-broken", data=False)
    bad = encode({"x": np.zeros((5, 3), np.float32), "y": np.zeros(5, np.int64)})
    stack.upload_data("site-broken", {"digits/train/data.safetensors": bad, "digits/test/data.safetensors": bad})
    return "site-broken"


def test_crashing_silo_is_reported_and_round_goes_on_at_quorum(stack, spec, broken_silo):
    run = stack.start_run(spec(silos=["site-1", "site-2", broken_silo], quorum=0.6, run_id="e2e-quorum"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    silos = status["history"][0]["silos"]
    assert silos["site-1"]["state"] == silos["site-2"]["state"] == "received"
    assert silos[broken_silo]["state"] == "failed"
    assert "shape" in silos[broken_silo]["reason"] or "data" in silos[broken_silo]["reason"]


def test_below_quorum_fails_clearly_and_keeps_last_good_model(stack, spec, broken_silo):
    run = stack.start_run(spec(silos=["site-1", broken_silo], quorum=1.0, run_id="e2e-below-quorum"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Failed"
    assert "quorum needs 2" in status["error"] and broken_silo in status["error"]
    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["status"] == "failed" and report["model"]["path"] == layout.global_model(run, 0)
    with pytest.raises(Exception):
        stack.download(layout.MODELS, layout.global_model(run, 1))


def test_kill_9_host_mid_run_finishes_with_each_round_aggregated_once(stack, spec, subscriber):
    run = stack.start_run(spec(rounds=3, run_id="e2e-kill", checkpoint_every=2))
    stack.wait_round(run, 1)
    stack.host.kill()
    stack.host.start(timeout=60)
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    assert [r["round"] for r in status["history"]] == [0, 1, 2]
    for r in range(3):
        record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, r)))
        assert record["model"]["path"] == layout.global_model(run, r + 1)
        assert len(record["accepted"]) == 3
    final = status["output"]["model"]
    assert final["path"] == layout.global_model(run, 3)

    # A subscriber de-duplicating by event id hears every fact of the run once, none missing, none extra.
    expected = {f"run:{run}:RunStarted", *(f"run:{run}:RoundCompleted:{r}" for r in range(3)), f"run:{run}:RunCompleted"}
    facts = wait_until(lambda: (f := subscriber.facts(f"runs/{run}")) and set(f) >= expected and f,
                       timeout=120, what="every fact of the run delivered")
    assert set(facts) == expected
    assert sorted(e["data"]["round"] for e in facts.values() if e["type"] == "fedfunc.RoundCompleted") == [0, 1, 2]
    assert facts[f"run:{run}:RunCompleted"]["data"]["model"] == final
    # and MLflow has each round once
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.mlflow_uri)
    (tracked,) = client.search_runs([client.get_experiment_by_name("fedfunc").experiment_id],
                                    filter_string=f"tags.`fedfunc.run` = '{run}'")
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "accuracy")] == [0, 1, 2]


def test_disabled_silos_leave_and_a_silo_that_becomes_ready_joins_from_the_next_round(stack, spec, own_silo,
                                                                                      cut_off, subscriber):
    """Round 0 is held open by a silo whose job cannot write (the gate) until the membership has changed,
    so onboarding never races the round. Each disabling and each onboarding is told as its own event."""
    leaving, gate, joining = own_silo("e2e-leaving"), own_silo("e2e-gate"), own_silo("e2e-joining")
    stack.api("POST", f"/api/silos/{joining}/disable", role="admin")
    gate_creds = cut_off(gate)
    run = stack.start_run(spec(silos=[leaving, gate, joining], rounds=2, quorum=0.5, run_id="e2e-membership"))
    first = stack.wait_round(run, 0)["current_round"]
    assert set(first["jobs"]) == {leaving, gate}  # joining is disabled: not in round 0
    for silo in (leaving, gate):
        stack.api("POST", f"/api/silos/{silo}/disable", role="admin")
    stack.add_silo(joining)  # onboarded again: ready from the next round on
    # The gate's owner reports its job failed (with its own key): round 0 can end.
    report_failure(BlobOutbox(own_outbox(gate_creds)), layout.outbox_prefix(run, 0, gate), "held by the test", None)
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    round0, round1 = ({s: o["state"] for s, o in r["silos"].items()} for r in status["history"])
    assert round0 == {leaving: "received", gate: "failed"}  # disabling does not disturb the round in progress
    assert round1 == {joining: "received"}
    assert status["history"][0]["silos"][gate]["reason"] == "held by the test"

    def told(silo: str, kind: str) -> list[dict]:
        return [e for e in subscriber.facts(f"silos/{silo}").values() if e["type"] == f"fedfunc.{kind}"]

    wait_until(lambda: all(told(s, "SiloDisabled") for s in (leaving, gate, joining))
               and len(told(joining, "SiloOnboarded")) >= 2, timeout=60, what="the silo events delivered")
    assert len(told(joining, "SiloOnboarded")) == 2   # onboarded, disabled, onboarded again: two facts
    assert [e["data"]["silo"] for e in told(leaving, "SiloDisabled")] == [leaving]


def test_malformed_update_is_rejected_with_reason_and_round_goes_on(stack, spec, own_silo, cut_off):
    """A silo that publishes a NaN update in place of its job's (its compute cut off from its storage, the
    forged update written with its key): the round rejects it with the rule, aggregates the others at
    quorum, and reports the silo as rejected."""
    evil = own_silo("site-evil", data=False)
    creds = cut_off(evil)
    run = stack.start_run(spec(silos=["site-1", "site-2", evil], quorum=0.6, run_id="e2e-malformed"))
    stack.wait_round(run, 0)
    forge_nan_update(stack, run, evil, creds)
    cut_off.restore(evil)  # round 0 is decided; its evaluate-only round need not wait out the deadline for it
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    rejected = status["history"][0]["silos"][evil]
    assert rejected["state"] == "rejected" and "non_finite" in rejected["reason"]
    record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, 0)))
    assert record["accepted"] == ["site-1", "site-2"]
