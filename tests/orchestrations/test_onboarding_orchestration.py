"""``onboard_silo`` with a scripted Durable context: validate, then each ensure-step in order, then
``SiloOnboarded`` told to ``observe``; a step that fails (after Durable's retries) abandons the onboarding,
so no silo stays half-registered (and nothing is told)."""
from __future__ import annotations

import pytest
from durable_fake import T0, FakeContext, Orchestration, durable_failure

from fedfunc import protocol as p
from orchestrations.failures import ACTIVITY_RETRY
from orchestrations.onboarding import onboard_silo

REQUEST = {"name": "site-9", "compute": "local", "policy": {"allowed_tasks": ["digits"]}}


def validated() -> tuple[Orchestration, dict]:
    o = Orchestration(onboard_silo, FakeContext(REQUEST, instance_id="onboard:site-9"))
    validate = o.pending
    assert (validate.kind, validate.name, validate.input) == ("activity", p.VALIDATE_SILO, REQUEST)
    o.send(REQUEST)
    request = {**REQUEST, "smoke_id": o.pending.input["smoke_id"]}
    assert request["smoke_id"].startswith("onboard:site-9-")  # fresh per attempt, fixed across replays
    return o, request


def test_each_step_runs_in_order_with_retries_and_the_silo_is_ready():
    o, request = validated()
    for step in p.ONBOARDING_STEPS:
        task = o.pending
        assert (task.kind, task.name, task.retry, task.input) == ("activity", step, ACTIVITY_RETRY, request)
        assert o.context.status == {"silo": "site-9", "step": step,
                                    "done": [{"step": s, "result": {"ok": s}} for s in p.ONBOARDING_STEPS
                                             if p.ONBOARDING_STEPS.index(s) < p.ONBOARDING_STEPS.index(step)]}
        o.send({"ok": step})
    told = o.pending
    assert (told.kind, told.name, told.retry) == ("activity", p.OBSERVE, ACTIVITY_RETRY)
    fact = p.parse_fact(told.input)
    assert (fact.kind, fact.silo, fact.at, fact.compute) == ("SiloOnboarded", "site-9", T0, "local")
    assert fact.occurrence != request["smoke_id"].removeprefix("onboard:site-9-")  # its own id per onboarding
    o.send(None)
    assert o.done and o.output["status"] == "ready"
    assert [s["step"] for s in o.output["steps"]] == list(p.ONBOARDING_STEPS)
    assert o.context.status["step"] == "ready"


@pytest.mark.parametrize("failing", p.ONBOARDING_STEPS)
def test_a_failed_step_abandons_the_onboarding_and_names_the_step(failing):
    o, request = validated()
    for step in p.ONBOARDING_STEPS[:p.ONBOARDING_STEPS.index(failing)]:
        o.send({"ok": step})
    o.throw(durable_failure("smoke job on silo 'site-9' failed checks ['policy_valid']"))
    abandon = o.pending
    assert (abandon.kind, abandon.name, abandon.input) == ("activity", p.ABANDON_ONBOARDING, request)
    with pytest.raises(RuntimeError) as err:
        o.send(None)
    assert str(err.value) == f"onboarding site-9 failed at {failing}: smoke job on silo 'site-9' failed checks ['policy_valid']"
    assert o.context.status["error"] == "smoke job on silo 'site-9' failed checks ['policy_valid']"
    assert o.context.status["step"] == failing
    assert not any(t.name == p.OBSERVE for t in o.context.created)


def test_a_request_that_fails_validation_registers_nothing_so_nothing_is_abandoned():
    o = Orchestration(onboard_silo, FakeContext(REQUEST))
    with pytest.raises(Exception, match="compute"):
        o.throw(durable_failure("compute: 'gpu' — the local backend runs silos on compute 'local'"))
    assert [t.name for t in o.context.created] == [p.VALIDATE_SILO]
