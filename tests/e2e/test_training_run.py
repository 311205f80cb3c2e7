"""A federated run end to end: real silo jobs, real storage, the real Function App, driven over HTTP."""
from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime

from fedfunc import layout

SILOS = ("site-1", "site-2", "site-3")


def test_run_trains_every_silo_and_writes_report(stack, spec):
    run = stack.start_run(spec(rounds=2, run_id="e2e-basic"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    history = status["history"]
    assert [r["round"] for r in history] == [0, 1]
    for r in history:
        assert {s: o["state"] for s, o in r["silos"].items()} == {s: "received" for s in SILOS}
        assert r["num_samples"] == sum(o["num_samples"] for o in r["silos"].values())
    assert history[1]["metrics"]["accuracy"] > 0.85
    assert history[1]["metrics"]["loss"] < history[0]["metrics"]["loss"]

    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["status"] == "completed" and report["rounds_completed"] == 2
    assert report["started"] < report["ended"]
    for r in report["rounds"]:
        _assert_timeline_in_order(r["timeline"], report)
    assert stack.download(layout.RUNS, layout.report(run, "png"))[:8] == b"\x89PNG\r\n\x1a\n"
    for r in (0, 1):
        record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, r)))
        assert record["accepted"] == sorted(SILOS) and record["rejected"] == []
    assert stack.download(layout.MODELS, layout.global_model(run, 2))


def _assert_timeline_in_order(timeline: dict, report: dict) -> None:
    """Every step of the round and of each silo's job is stamped, in the order the steps happen."""
    at = {k: datetime.fromisoformat(v) for k, v in timeline.items() if k != "silos"}
    steps = ["started", "planned", "submitted", "collected", "aggregated", "evaluated"]
    assert [at[s] for s in steps] == sorted(at[s] for s in steps)
    assert datetime.fromisoformat(report["started"]) <= at["started"]
    assert at["evaluated"] <= datetime.fromisoformat(report["ended"])
    assert set(timeline["silos"]) == set(SILOS)
    for silo, t in timeline["silos"].items():
        seen = [datetime.fromisoformat(t[s]) for s in ("submitted", "started", "trained", "landed", "delivered",
                                                          "raised")]
        assert seen == sorted(seen), (silo, t)
        assert at["planned"] <= seen[0] and seen[-1] <= at["collected"]


def test_history_holds_references_not_weights(stack, spec):
    """No history event of any instance carries a payload the size of a model (digits MLP ≈ 20 KB)."""
    run = stack.start_run(spec(run_id="e2e-history"))
    assert stack.wait_run(run, timeout=300)["runtime_status"] == "Completed"
    db = sqlite3.connect(f"file:{stack.host.state}?mode=ro", uri=True)
    tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
    largest = 0
    for table in tables:
        cols = [c[1] for c in db.execute(f"pragma table_info({table})")]
        for col in cols:
            (size,) = db.execute(f"select coalesce(max(length({col})), 0) from {table}").fetchone()
            largest = max(largest, size or 0)
    model_bytes = len(stack.download(layout.MODELS, layout.global_model(run, 0)))
    assert largest < model_bytes / 2, f"a stored history value is {largest} bytes; the model is {model_bytes}"


def test_runs_are_listed_and_unknown_run_is_404(stack, spec):
    runs = stack.api("GET", "/api/runs")["runs"]
    assert any(r["run"] == "e2e-basic" for r in runs)
    r = stack.api("GET", "/api/runs/no-such-run", expect=(404,))
    assert "no-such-run" in r["error"]


def test_cancel_terminates_run_and_round(stack, spec):
    run = stack.start_run(spec(rounds=3, run_id="e2e-cancel"))
    deadline = time.monotonic() + 120
    while not (stack.run_status(run).get("current_round") or {}).get("jobs"):
        assert time.monotonic() < deadline, "round 0 never started its jobs"
        time.sleep(0.1)
    cancelled = stack.api("POST", f"/api/runs/{run}/cancel")
    assert cancelled["cancelled"] and len(cancelled["cancelled_jobs"]) == 3
    status = stack.run_status(run)
    assert status["runtime_status"] == "Terminated"
    round0 = stack.api("GET", f"/runtime/webhooks/durabletask/instances/{run}:r0", role=None)
    assert round0["runtimeStatus"] == "Terminated"
    again = stack.api("POST", f"/api/runs/{run}/cancel", expect=(409,))
    assert "Terminated" in again["error"]


def test_cli_shows_a_run(stack):
    from typer.testing import CliRunner

    from fedfunc.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["run", "status", "e2e-basic", "--host", stack.host.origin,
                                      "--api-key", stack.scientist_key], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output and "site-1:received" in result.output
    denied = CliRunner().invoke(app, ["run", "list", "--host", stack.host.origin, "--api-key", "wrong"])
    assert denied.exit_code == 1 and "401" in denied.output
