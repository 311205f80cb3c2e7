"""A federated run end to end: real silo jobs, real storage, the real Function App, driven over HTTP."""
from __future__ import annotations

import base64
import json
import re
import sqlite3
from datetime import datetime

import pytest
from e2e_helpers import SILOS, run_spec, wait_instance

from fedfunc import layout, weights


@pytest.fixture(scope="module")
def basic_run(stack, bundle) -> dict:
    """A completed two-round run over the session's silos, which this module's tests only read."""
    run = stack.start_run(run_spec(bundle, rounds=2, run_id="e2e-basic"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    return status


def test_run_trains_every_silo_and_writes_report(stack, basic_run):
    run = basic_run["run"]
    history = basic_run["history"]
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


def test_cancel_terminates_run_and_round(stack, spec):
    run = stack.start_run(spec(rounds=3, run_id="e2e-cancel"))
    assert set(stack.wait_round(run, 0)["current_round"]["jobs"]) == set(SILOS)  # jobs started, round collecting
    cancelled = stack.api("POST", f"/api/runs/{run}/cancel")
    assert cancelled["cancelled"] and len(cancelled["cancelled_jobs"]) == 3
    wait_instance(stack, run, "Terminated")  # the API queues the termination; wait for it to happen
    wait_instance(stack, f"{run}:r0", "Terminated")
    assert stack.run_status(run)["runtime_status"] == "Terminated"
    again = stack.api("POST", f"/api/runs/{run}/cancel", expect=(409,))
    assert "Terminated" in again["error"]


def test_cli_shows_a_run(stack, basic_run):
    from typer.testing import CliRunner

    from fedfunc.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["run", "status", basic_run["run"], "--host", stack.host.origin,
                                      "--api-key", stack.scientist_key], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output and "site-1:received" in result.output
    denied = CliRunner().invoke(app, ["run", "list", "--host", stack.host.origin, "--api-key", "wrong"])
    assert denied.exit_code == 1 and "401" in denied.output
