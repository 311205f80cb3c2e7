"""Domain events: one id per fact, the same on every replay; references and figures only, each event's
data valid against its documented schema."""
from __future__ import annotations

import json

from observe_facts import T0, round_result

from fedfunc import protocol as p
from fedfunc.observe.events import DATA_SCHEMAS, EVENT_TYPES, MAX_TEXT, events_for


def test_each_fact_makes_its_events_with_ids_fixed_by_the_fact(run_facts):
    events = [e for f in run_facts() for e in events_for(f)]
    assert [(e.kind, e.id) for e in events] == [
        ("RunStarted", "run:run-a:RunStarted"),
        ("RoundCompleted", "run:run-a:RoundCompleted:0"),
        ("RoundCompleted", "run:run-a:RoundCompleted:1"),
        ("UpdateRejected", "run:run-a:UpdateRejected:1:site-3"),
        ("RunCompleted", "run:run-a:RunCompleted")]
    again = [e for f in run_facts() for e in events_for(f)]   # a replay makes the same facts: the same events
    assert again == events
    other_run = [e.id for f in run_facts("run-b") for e in events_for(f)]
    assert not set(other_run) & {e.id for e in events}


def test_cloud_events_carry_schema_valid_data_and_no_weights(run_facts):
    for fact in run_facts():
        for event in events_for(fact):
            ce = event.cloud_event("/fedfunc")
            assert ce["specversion"] == "1.0" and ce["type"] == f"fedfunc.{event.kind}" and ce["source"] == "/fedfunc"
            assert ce["dataschema"] == f"urn:fedfunc:events:v1:{event.kind}"
            DATA_SCHEMAS[event.kind].model_validate(ce["data"])
            assert len(json.dumps(ce)) < 4000, "an event holds references and figures, not model bytes"
    rc = events_for(run_facts()[2])[0].cloud_event("/fedfunc")
    assert rc["subject"] == "runs/run-a/rounds/1"
    assert rc["data"]["model"]["path"] == "run-a/round-0002/global.safetensors"
    assert rc["data"]["aggregate"] == "runs/run-a/rounds/0001/aggregate.json"
    assert rc["data"]["silos"]["site-3"] == {"state": "rejected", "reason": "update.non_finite: tensor 'w' has NaN",
                                             "seconds": 3.0}


def test_silo_facts_and_long_silo_text():
    onboarded = p.SiloFact(kind="SiloOnboarded", silo="site-9", at=T0, occurrence="uuid/with#odd?chars",
                           compute="local")
    (event,) = events_for(onboarded)
    assert event.id == "silo:site-9:SiloOnboarded:uuid_with_odd_chars"   # also a Table row key
    assert event.cloud_event("/x")["data"] == {"silo": "site-9", "compute": "local"}
    result = round_result(0, rejected="site-3")
    long = result.model_copy(update={"silos": {"site-3": p.SiloOutcome(state="rejected", reason="x" * 5000)}})
    events = events_for(p.RunFact(kind="RoundCompleted", run_id="r", at=T0, result=long))
    assert all(len(e.data.get("reason", "")) <= MAX_TEXT for e in events)
    assert {e.kind for e in events} | {"RunStarted", "RunCompleted", "RunFailed", "RunCancelled",
                                        "SiloOnboarded", "SiloDisabled"} == set(EVENT_TYPES)
