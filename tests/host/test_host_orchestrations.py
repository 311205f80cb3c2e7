"""Durable orchestrations through the real SDK: retries, sub-orchestrations, continue_as_new,
events, timers, custom status, terminate, purge, the SDK client, and bad input."""
from __future__ import annotations

import json
import sqlite3

import requests
from host_helpers import MASTER_KEY, finished, start

from fedfunc.host.testing import wait_for_instance, wait_until

MGMT = "/runtime/webhooks/durabletask/instances"
KEY = {"x-functions-key": MASTER_KEY}


def client(host, op, instance_id="", **params):
    r = requests.post(host.url(f"/api/client/{op}/{instance_id}".rstrip("/")), params=params.pop("query", None),
                      json=params.pop("body", None))
    assert r.status_code == 200, r.text
    return r.json()


def test_activity_retries_including_exhaustion_and_parallel(features):
    status = finished(start(features, "retrying", "retry-1", "retry-1"))
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == {"ok": 3, "exhausted": "Activity function 'flaky' failed: flaky attempt 2 fails",
                                "parallel": [1, 2, 3],
                                "raced": {"good": 2, "bad": "Activity function 'flaky' failed: flaky attempt 2 fails"}}
    db = sqlite3.connect(f"file:{features.state}?mode=ro", uri=True)
    (engine,) = db.execute("SELECT engine FROM instances WHERE id='retry-1'").fetchone()
    assert json.loads(engine)["retry_tasks"] == {}, "finished retried calls leave no bookkeeping (nor their inputs)"


def test_sub_orchestrations_with_explicit_ids_and_continue_as_new(features):
    status = finished(start(features, "parent", "par-1", 3))
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"]["children"] == [[2], [4, 2], [6, 4, 2]]
    assert "Sub-orchestration 'explode' (par-1-bad) failed: kaboom in orchestrator" in status["output"]["failure"]
    child = requests.get(features.url(f"{MGMT}/par-1-c2"), headers=KEY).json()
    assert child["runtimeStatus"] == "Completed" and child["input"] == {"left": 0, "seen": [6, 4, 2]}


def test_external_event_custom_status_and_sdk_client(features):
    payload = start(features, "waiter", "wait-1")
    wait_until(lambda: client(features, "status", "wait-1")["custom"] == {"stage": "waiting"}, what="custom status")
    client(features, "raise", "wait-1", query={"event": "go"}, body={"approved": True})
    status = finished(payload)
    assert status["output"] == {"event": {"approved": True}} and status["customStatus"] == {"stage": "done"}
    seen = client(features, "status", "wait-1")
    assert seen["status"] == "Completed" and seen["history"] > 0


def test_events_raised_before_waiting_are_buffered_in_order(features):
    payload = start(features, "two_events", "two-1")
    client(features, "raise", "two-1", query={"event": "b"}, body="second")
    url = payload["sendEventPostUri"].replace("{eventName}", "a")
    assert requests.post(url, json={"first": 1}).status_code == 202
    assert finished(payload)["output"] == [{"first": 1}, "second"]


def test_timer_wins_the_race(features):
    status = finished(start(features, "waiter", "race-1", 0.3))
    assert status["output"] == {"timer": True}


def test_terminate_and_purge_by_sdk_and_by_public_urls(features):
    start(features, "waiter", "term-1")
    client(features, "terminate", "term-1")
    status = wait_for_instance(features.url(f"{MGMT}/term-1"), headers=KEY)
    assert status["runtimeStatus"] == "Terminated" and status["output"] == "stopped by test"
    assert client(features, "purge", "term-1") == {"deleted": 1}
    assert client(features, "status", "term-1")["message"] == "No instance with ID 'term-1' found."

    payload = start(features, "waiter", "term-2")
    url = payload["terminatePostUri"].replace("{text}", "by-url")
    assert requests.post(url).status_code == 202
    assert finished(payload)["runtimeStatus"] == "Terminated"
    assert requests.post(url).status_code == 410
    assert requests.delete(payload["purgeHistoryDeleteUri"]).status_code == 200
    assert requests.get(payload["statusQueryGetUri"]).status_code == 404
    assert requests.post(payload["sendEventPostUri"].replace("{eventName}", "go")).status_code == 404


def test_list_with_filters_through_the_sdk(features):
    finished(start(features, "failing", "lst-fail"))
    finished(start(features, "parent", "lst-par", 1))
    assert client(features, "list_by", query={"status": "Failed", "prefix": "lst-"}) == ["lst-fail", "lst-par-bad"]
    assert client(features, "list_by", query={"status": "Completed", "prefix": "lst-"}) == ["lst-par", "lst-par-c0"]
    assert {"lst-fail", "lst-par", "lst-par-c0"} <= set(client(features, "list"))
    r = requests.get(features.url(MGMT), params={"runtimeStatus": "Completed", "instanceIdPrefix": "lst-par"}, headers=KEY)
    assert sorted(s["instanceId"] for s in r.json()) == ["lst-par", "lst-par-c0"]


def test_failures_are_isolated_per_instance(features):
    bad = start(features, "failing", "fail-1")
    good = start(features, "parent", "ok-1", 1)
    missing = start(features, "missing_activity", "miss-1")
    assert finished(bad)["output"] == "orchestrator says no"
    assert finished(bad)["runtimeStatus"] == "Failed"
    assert finished(good)["runtimeStatus"] == "Completed"
    status = finished(missing)
    assert status["runtimeStatus"] == "Failed" and "no activity function named 'no_such_activity'" in status["output"]


def test_bad_input(features):
    r = requests.post(features.url("/api/start/no_such_orchestrator"))
    assert r.status_code == 400 and "no_such_orchestrator" in r.json()["error"]
    r = requests.post(features.url("/runtime/webhooks/durabletask/orchestrators/nope"), headers=KEY)
    assert r.status_code == 400 and "nope" in r.json()["ExceptionMessage"]
    r = requests.post(features.url("/runtime/webhooks/durabletask/orchestrators/waiter/json-1"), data="{not json", headers=KEY)
    assert r.status_code == 400 and "not valid JSON" in r.text
    start(features, "waiter", "json-2")
    r = requests.post(features.url(f"{MGMT}/json-2/raiseEvent/go"), data="{bad", headers=KEY)
    assert r.status_code == 400
    assert requests.post(features.url(f"{MGMT}/json-2/terminate"), headers=KEY).status_code == 202
    assert requests.get(features.url(f"{MGMT}/json-2")).status_code == 401  # master key is set
    assert requests.get(features.url(f"{MGMT}/never-was"), headers=KEY).status_code == 404
