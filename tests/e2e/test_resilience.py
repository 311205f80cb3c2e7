"""Failures a real deployment meets: crashing silos, too few silos, the host killed mid-run, silos coming and going."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedfunc import layout
from fedfunc.host.testing import wait_until


@pytest.fixture(scope="module")
def broken_silo(stack):
    """A silo whose data is not a valid partition: its job fails and says why."""
    stack.add_silo("site-broken")
    stack.upload_data("site-broken", "digits", np.zeros((5, 3), np.float32), np.zeros(5, np.int64))
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


def test_disabled_silo_leaves_and_new_silo_joins_from_next_round(stack, spec, digits, subscriber):
    run = stack.start_run(spec(silos="all", rounds=2, run_id="e2e-membership"))
    first = stack.wait_round(run, 0)
    assert set(first["current_round"]["missing"]) | set(first["current_round"]["received"]) >= {"site-1", "site-2", "site-3"}
    stack.api("POST", "/api/silos/site-3/disable", role="admin")
    stack.add_silo("site-4")
    stack.upload_data("site-4", "digits", digits.x_train[:300], digits.y_train[:300])
    status = stack.wait_run(run, timeout=300)
    try:
        assert status["runtime_status"] == "Completed", status
        round0, round1 = (set(r["silos"]) for r in status["history"])
        assert "site-3" in round0 and "site-4" not in round0
        assert "site-4" in round1 and "site-3" not in round1
        assert status["history"][1]["silos"]["site-4"]["state"] == "received"
        told = wait_until(lambda: (f := subscriber.facts("silos/")) and {e["type"] for e in f.values()} >= {
            "fedfunc.SiloDisabled", "fedfunc.SiloOnboarded"} and f, timeout=60, what="silo events delivered")
        assert "site-3" in [e["data"]["silo"] for e in told.values() if e["type"] == "fedfunc.SiloDisabled"]
        assert "site-4" in [e["data"]["silo"] for e in told.values() if e["type"] == "fedfunc.SiloOnboarded"]
    finally:
        stack.api("DELETE", "/api/silos/site-4", role="admin")
        stack.api("POST", "/api/silos", {"name": "site-3", "compute": "local", "policy": stack.silo_policy()},
                  role="admin")
        stack.add_silo("site-3")


def test_malformed_update_is_rejected_with_reason_and_round_goes_on(stack, spec, digits):
    """A silo that publishes a NaN update (its real job stopped, a forged update in its place): the round
    rejects it with the rule, aggregates the others at quorum, and reports the silo as rejected."""
    from azure.core.exceptions import ResourceExistsError

    from fedfunc import weights
    from fedfunc.backends.local import LocalProcessBackend
    from fedfunc.silo.home import read_credentials, silo_home
    from fedfunc.storage import blob_service

    stack.add_silo("site-evil")
    stack.upload_data("site-evil", "digits", digits.x_train[:200], digits.y_train[:200])
    try:
        run = stack.start_run(spec(silos=["site-1", "site-2", "site-evil"], quorum=0.6, run_id="e2e-malformed"))
        collecting = stack.wait_round(run, 0)
        LocalProcessBackend(stack.home).cancel(collecting["current_round"]["jobs"]["site-evil"])
        model = weights.decode(stack.download(layout.MODELS, layout.global_model(run, 0)))[0]
        poisoned = weights.encode({k: np.full_like(v, np.nan) for k, v in model.items()}, {
            "run": run, "round": "0", "silo": "site-evil", "nonce": json.loads(stack.download(
                layout.RUNS, layout.round_manifest(run, 0)))["nonce"], "num_samples": "200"})
        outbox = blob_service(read_credentials(silo_home(stack.home, "site-evil")).connection_string) \
            .get_container_client(layout.OUTBOX)
        prefix = layout.outbox_prefix(run, 0, "site-evil")
        try:
            outbox.upload_blob(prefix + layout.METRICS, json.dumps({"loss": 0.1, "num_samples": 200}).encode())
            outbox.upload_blob(prefix + layout.UPDATE, poisoned)
        except ResourceExistsError:
            pytest.skip("the real job published before it could be stopped")
        status = stack.wait_run(run, timeout=300)
        assert status["runtime_status"] == "Completed", status
        evil = status["history"][0]["silos"]["site-evil"]
        assert evil["state"] == "rejected" and "non_finite" in evil["reason"]
        record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, 0)))
        assert record["accepted"] == ["site-1", "site-2"]
    finally:
        stack.api("DELETE", "/api/silos/site-evil", role="admin")
