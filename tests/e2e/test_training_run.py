"""A federated run end to end: real silo jobs, real storage, the real Function App, driven over HTTP."""
from __future__ import annotations

import base64
import json
import re
import sqlite3
from datetime import datetime

from e2e_helpers import SILOS, wait_instance

from fedfunc import layout, weights
from fedfunc.host.testing import wait_until


def test_run_trains_every_silo_and_writes_report(stack, basic_run, digits):
    status = basic_run
    run, history = status["run"], status["history"]
    assert [r["round"] for r in history] == [0, 1]
    for r in history:
        assert {s: o["state"] for s, o in r["silos"].items()} == {s: "received" for s in SILOS}
        assert r["num_samples"] == sum(o["num_samples"] for o in r["silos"].values())
    # Accuracy is pooled over the silos' test parts: every test example of every silo, counted once.
    test_examples = sum(len(p.test) for p in digits)
    assert status["output"]["metrics"] == history[1]["metrics"]
    assert history[1]["metrics"]["accuracy"] > 0.85 and history[1]["metrics"]["num_examples"] == test_examples
    assert history[1]["metrics"]["loss"] < history[0]["metrics"]["loss"] < status["initial_metrics"]["loss"]

    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["status"] == "completed" and report["rounds_completed"] == 2
    assert report["final_metrics"] == history[1]["metrics"]
    assert sum(map(sum, report["final_evaluation"]["confusion"])) == test_examples
    assert report["started"] < report["ended"]
    for r in report["rounds"]:
        _assert_timeline_in_order(r["timeline"], report)
    assert stack.download(layout.RUNS, layout.report(run, "png"))[:8] == b"\x89PNG\r\n\x1a\n"
    for r in (0, 1):
        record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, r)))
        assert record["accepted"] == sorted(SILOS) and record["rejected"] == []
    assert stack.download(layout.MODELS, layout.global_model(run, 2))
    final = json.loads(stack.download(layout.RUNS, layout.round_manifest(run, 2)))  # the evaluate-only round
    assert final["evaluate_only"] and final["needed"] == 0


def test_target_accuracy_stops_at_the_first_model_that_reaches_it(stack, spec):
    run = stack.start_run(spec(rounds=5, target_accuracy=0.5, run_id="e2e-target"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    history = status["history"]
    assert history and history[-1]["metrics"]["accuracy"] >= 0.5
    assert all(r["metrics"]["accuracy"] < 0.5 for r in history[:-1])
    assert status["output"]["model"] == history[-1]["model"]  # the model that reached it is the run's model
    assert "target accuracy 0.5 reached" in status["output"]["stop_reason"]


def _assert_timeline_in_order(timeline: dict, report: dict) -> None:
    """Every step of the round and of each silo's job is stamped, in the order the steps happen (aggregating
    and pooling the evaluations side by side, both after the collection)."""
    at = {k: datetime.fromisoformat(v) for k, v in timeline.items() if k != "silos"}
    steps = ["started", "planned", "submitted", "collected", "aggregated"]
    assert [at[s] for s in steps] == sorted(at[s] for s in steps) and at["collected"] <= at["evaluated"]
    assert datetime.fromisoformat(report["started"]) <= at["started"]
    assert max(at["aggregated"], at["evaluated"]) <= datetime.fromisoformat(report["ended"])
    assert set(timeline["silos"]) == set(SILOS)
    for silo, t in timeline["silos"].items():
        seen = [datetime.fromisoformat(t[s]) for s in ("submitted", "started", "trained", "landed", "delivered",
                                                          "raised")]
        assert seen == sorted(seen), (silo, t)
        assert at["planned"] <= seen[0] and seen[-1] <= at["collected"]


def test_history_holds_references_not_weights(stack, basic_run):
    """No stored orchestration value carries a model's weights, as bytes (base64) or as numbers (JSON).

    The global models of the run are read back; a slice of each tensor's raw bytes, base64-encoded at every
    alignment, and any run of 33 numbers in a row would betray weights in the host's state."""
    run = basic_run["run"]
    needles = set()
    for round_ in (0, 1, 2):
        arrays, _ = weights.decode(stack.download(layout.MODELS, layout.global_model(run, round_)))
        for a in arrays.values():
            raw = a.tobytes()[:96]
            needles |= {base64.b64encode(raw[i:i + 48])[4:60].decode() for i in range(3)}
    numbers = re.compile(r"(?:-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\s*,\s*){32}")
    db = sqlite3.connect(f"file:{stack.host.state}?mode=ro", uri=True)
    values = 0
    for (table,) in db.execute("select name from sqlite_master where type='table'"):
        for row in db.execute(f"select * from {table}"):
            for value in row:
                if not isinstance(value, str):
                    continue
                values += 1
                assert not numbers.search(value), f"{table} holds a long list of numbers: {value[:200]}"
                found = [n for n in needles if n in value]
                assert not found, f"{table} holds model bytes (base64 {found[0]!r})"
    assert values > 100  # the state was really read


def test_runs_are_listed_and_unknown_run_is_404(stack, basic_run):
    runs = stack.api("GET", "/api/runs")["runs"]
    assert any(r["run"] == basic_run["run"] for r in runs)
    r = stack.api("GET", "/api/runs/no-such-run", expect=(404,))
    assert "no-such-run" in r["error"]


def test_cancel_terminates_run_and_round(stack, spec, subscriber):
    run = stack.start_run(spec(rounds=3, run_id="e2e-cancel"))
    assert set(stack.wait_round(run, 0)["current_round"]["jobs"]) == set(SILOS)  # jobs started, round collecting
    cancelled = stack.api("POST", f"/api/runs/{run}/cancel")
    assert cancelled["cancelled"] and len(cancelled["cancelled_jobs"]) == 3
    wait_instance(stack, run, "Terminated")  # the API queues the termination; wait for it to happen
    wait_instance(stack, f"{run}:r0", "Terminated")
    assert stack.run_status(run)["runtime_status"] == "Terminated"
    again = stack.api("POST", f"/api/runs/{run}/cancel", expect=(409,))
    assert "Terminated" in again["error"]
    facts = wait_until(lambda: subscriber.facts(f"runs/{run}").get(f"run:{run}:RunCancelled"), timeout=60,
                       what="RunCancelled delivered")
    assert facts["data"]["error"] == "cancelled through the API" and facts["data"]["rounds_completed"] == 0


def test_cli_shows_a_run(stack, basic_run, fedfunc):
    result = fedfunc("run", "status", basic_run["run"], "--host", stack.host.origin, "--api-key", stack.scientist_key)
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output and "site-1:received" in result.output
    denied = fedfunc("run", "list", "--host", stack.host.origin, "--api-key", "wrong")
    assert denied.exit_code == 1 and "401" in denied.output
