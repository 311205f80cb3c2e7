"""``federated_round``, every branch, with a scripted Durable context: what the round asks for (activities,
event waits, its deadline timer) and what it decides as each silo's update, failure or silence arrives."""
from __future__ import annotations

from datetime import timedelta

import pytest
from durable_fake import T0, AllOf, AnyOf, FakeContext, Orchestration, Task, durable_failure, model

from fedfunc import protocol as p
from fedfunc.spec import RunSpec
from orchestrations.failures import ACTIVITY_RETRY
from orchestrations.round import RoundFailed, federated_round

SILOS = ["site-a", "site-b", "site-c"]
MANIFEST = "run-1/rounds/0000/manifest.json"
DEADLINE = T0 + timedelta(seconds=60)
SILENT = f"no update before the deadline {DEADLINE.isoformat()}"


def round_job(**spec) -> p.RoundJob:
    fields = {"task": "digits", "silos": SILOS, "quorum": 0.6, "round_deadline_s": 60, **spec}
    return p.RoundJob(run_id="run-1", round=0, spec=RunSpec(**fields), model=model(0), nonce="n0")


def prepared(ready=SILOS, **spec) -> Orchestration:
    """A round that asked for ``prepare_round`` and was told ``ready`` silos take part."""
    o = Orchestration(federated_round, FakeContext(round_job(**spec).wire(), instance_id="run-1:r0"))
    prepare = o.pending
    assert (prepare.kind, prepare.name, prepare.retry) == ("activity", p.PREPARE_ROUND, ACTIVITY_RETRY)
    assert p.RoundJob.model_validate(prepare.input).deadline == DEADLINE  # the orchestration clock + deadline
    o.send(p.RoundPlan(silos=ready, manifest=MANIFEST).wire())
    return o


def collecting(ready=SILOS, errors: dict[str, str] | None = None, **spec) -> Orchestration:
    """A round whose jobs were started (``errors``: silos whose submission failed) and that now waits."""
    o = prepared(ready, **spec)
    assert isinstance(o.pending, AllOf)
    orders = [p.SiloJobOrder.model_validate(t.input) for t in o.pending.tasks]
    assert [t.name for t in o.pending.tasks] == [p.START_SILO_JOB] * len(ready)
    assert all(t.retry == ACTIVITY_RETRY for t in o.pending.tasks)  # a transient storage fault is retried
    assert [order.silo for order in orders] == ready
    assert all(order.job.manifest == MANIFEST and order.job.deadline == DEADLINE for order in orders)
    errors = errors or {}
    o.send([(p.SiloJobStarted(silo=s, error=errors[s]) if s in errors else p.SiloJobStarted(silo=s, job_id=f"job-{s}"))
            .wire() for s in ready])
    return o


def waits(o: Orchestration) -> tuple[dict[str, Task], Task | None]:
    """The event waits (by event name) and the timer (None if none) of the pending ``task_any``."""
    assert isinstance(o.pending, AnyOf), o.pending
    events = {t.name: t for t in o.pending.tasks if t.kind == "event"}
    timers = [t for t in o.pending.tasks if t.kind == "timer"]
    return events, (timers[0] if timers else None)


def update(o: Orchestration, silo: str):
    events, _ = waits(o)
    return o.fire(events[p.update_event(silo)], p.UpdateNotice(path=f"runs/run-1/{silo}/update.safetensors",
                                                                 etag="0x1", size=10).wire())


def failed(o: Orchestration, silo: str, notice: dict | None):
    events, _ = waits(o)
    return o.fire(events[p.failed_event(silo)], notice)


def deadline(o: Orchestration):
    """The round's deadline timer fires (it must be among what the round awaits)."""
    [timer] = [t for t in o.context.created if t.kind == "timer"]
    o.context.advance(DEADLINE)
    return o.fire(timer)


def aggregate(o: Orchestration, accepted: list[str], rejected: dict[str, str] | None = None, *, model_=True):
    """Answer the pending ``aggregate`` with ``accepted`` (10 samples each) and ``rejected`` updates."""
    agg = o.pending
    assert (agg.kind, agg.name, agg.retry) == ("activity", p.AGGREGATE, ACTIVITY_RETRY)
    result = p.AggregateResult(accepted=accepted, samples={s: 10 for s in accepted}, num_samples=10 * len(accepted),
                               rejected=[p.Rejection(silo=s, reason=r) for s, r in (rejected or {}).items()],
                               model=model(1) if model_ else None)
    return o.send(result.wire())


def finish(o: Orchestration, metrics=None) -> p.RoundResult:
    evaluate = o.pending
    assert (evaluate.kind, evaluate.name, evaluate.retry) == ("activity", p.EVALUATE, ACTIVITY_RETRY)
    assert p.RoundJob.model_validate(evaluate.input).model.wire() == model(1)  # the new model is evaluated
    o.send(metrics or {"loss": 0.5, "accuracy": 0.8})
    assert o.done
    return p.RoundResult.model_validate(o.output)


def test_every_silo_updates_then_the_round_aggregates_evaluates_and_returns_references():
    o = collecting()
    events, timer = waits(o)
    assert set(events) == {p.update_event(s) for s in SILOS} | {p.failed_event(s) for s in SILOS}
    assert timer is not None and timer.fire_at == DEADLINE
    status = o.context.status
    assert (status["phase"], status["missing"], status["deadline"]) == ("collecting", SILOS, DEADLINE.isoformat())
    assert status["jobs"] == {s: f"job-{s}" for s in SILOS}

    update(o, "site-b")
    events, same_timer = waits(o)
    assert same_timer is timer and set(events) == {p.update_event("site-a"), p.failed_event("site-a"),
                                                   p.update_event("site-c"), p.failed_event("site-c")}
    assert (o.context.status["received"], o.context.status["missing"]) == (["site-b"], ["site-a", "site-c"])
    update(o, "site-a")
    update(o, "site-c")
    assert timer.cancelled  # nothing left to wait for: the deadline timer does not keep the instance alive
    order = p.AggregateOrder.model_validate(o.pending.input)
    assert sorted(order.updates) == SILOS and order.updates["site-a"].path == "runs/run-1/site-a/update.safetensors"
    aggregate(o, accepted=SILOS)
    result = finish(o, {"loss": 0.4, "accuracy": 0.9})
    assert result.model.wire() == model(1) and result.metrics == {"loss": 0.4, "accuracy": 0.9}
    assert result.num_samples == 30
    assert {s: (x.state, x.num_samples) for s, x in result.silos.items()} == {s: ("received", 10) for s in SILOS}
    assert o.context.status["phase"] == "done" and o.context.status["metrics"]["accuracy"] == 0.9
    assert (result.timeline.started, result.timeline.evaluated) == (T0, T0)  # the orchestration clock
    assert {s: t.raised for s, t in result.timeline.silos.items()} == {s: T0 for s in SILOS}


def test_deadline_fails_the_silent_silo_and_the_round_goes_on_at_quorum():
    o = collecting()
    update(o, "site-a")
    update(o, "site-b")
    deadline(o)
    order = p.AggregateOrder.model_validate(o.pending.input)
    assert sorted(order.updates) == ["site-a", "site-b"]
    aggregate(o, accepted=["site-a", "site-b"])
    result = finish(o)
    assert result.silos["site-c"].state == "failed" and result.silos["site-c"].reason == SILENT
    assert result.silos["site-c"].num_samples is None


def test_deadline_below_quorum_fails_the_round_naming_each_silent_silo():
    o = collecting()
    update(o, "site-a")
    with pytest.raises(RoundFailed) as err:
        deadline(o)
    assert str(err.value) == f"round 0: 1 update(s) of 3 silo(s), quorum needs 2; site-b: {SILENT}; site-c: {SILENT}"
    status = o.context.status
    assert status["phase"] == "failed" and status["failed"] == {"site-b": SILENT, "site-c": SILENT}
    assert status["received"] == ["site-a"]
    assert not any(t.name == p.AGGREGATE for t in o.context.created)  # nothing aggregated, the last model stays


@pytest.mark.parametrize("ready, spec, message", [
    (["site-a"], {"min_silos": 2}, "round 0: 1 ready silo(s), quorum needs 2"),
    ([], {"silos": "all"}, "round 0: 0 ready silo(s), quorum needs 1"),
])
def test_too_few_ready_silos_fail_the_round_before_any_job_starts(ready, spec, message):
    o = Orchestration(federated_round, FakeContext(round_job(**spec).wire()))
    with pytest.raises(RoundFailed) as err:
        o.send(p.RoundPlan(silos=ready, manifest=MANIFEST).wire())
    assert str(err.value) == message
    assert [t.name for t in o.context.created] == [p.PREPARE_ROUND]  # no job, no wait, no timer


def test_a_submission_error_fails_that_silo_only_and_it_is_not_waited_for():
    error = "job submission failed: FileNotFoundError: silo 'c' has no home"
    o = collecting(errors={"site-c": error})
    events, _ = waits(o)
    assert set(events) == {p.update_event("site-a"), p.failed_event("site-a"), p.update_event("site-b"), p.failed_event("site-b")}
    assert o.context.status["failed"] == {"site-c": error}
    update(o, "site-a")
    update(o, "site-b")  # every started silo answered: no wait for the deadline
    aggregate(o, accepted=["site-a", "site-b"])
    result = finish(o)
    assert (result.silos["site-c"].state, result.silos["site-c"].reason) == ("failed", error)


def test_every_submission_failing_ends_the_round_at_once():
    o = prepared()
    with pytest.raises(RoundFailed) as err:
        o.send([p.SiloJobStarted(silo=s, error=f"job submission failed: {s} unreachable").wire() for s in SILOS])
    [timer] = [t for t in o.context.created if t.kind == "timer"]
    assert timer.cancelled and not any(t.kind == "event" for t in o.context.created)
    assert str(err.value) == ("round 0: 0 update(s) of 3 silo(s), quorum needs 2; "
                              "site-a: job submission failed: site-a unreachable; "
                              "site-b: job submission failed: site-b unreachable; "
                              "site-c: job submission failed: site-c unreachable")


@pytest.mark.parametrize("notice, reason", [
    (p.FailureNotice(reason="data has shape (5, 3), the task needs (n, 64)").wire(),
     "data has shape (5, 3), the task needs (n, 64)"),
    (p.FailureNotice(reason="refused: bundle.unsigned", rule="bundle.unsigned").wire(), "refused: bundle.unsigned"),
    (None, "job failed"),
])
def test_a_failed_silo_is_reported_with_its_reason_and_its_update_no_longer_awaited(notice, reason):
    o = collecting()
    failed(o, "site-c", notice)
    events, _ = waits(o)
    assert p.update_event("site-c") not in events and p.failed_event("site-c") not in events
    update(o, "site-a")
    update(o, "site-b")
    aggregate(o, accepted=["site-a", "site-b"])
    result = finish(o)
    assert (result.silos["site-c"].state, result.silos["site-c"].reason) == ("failed", reason)


def test_an_update_after_the_silos_failure_is_not_awaited_and_a_failure_after_its_update_neither():
    o = collecting()
    update(o, "site-a")
    events, _ = waits(o)
    assert p.failed_event("site-a") not in events  # a's later failure note cannot undo its update
    failed(o, "site-b", None)
    events, _ = waits(o)
    assert p.update_event("site-b") not in events
    assert set(events) == {p.update_event("site-c"), p.failed_event("site-c")}


def test_quorum_lost_to_failures_fails_the_round_with_every_reason():
    o = collecting()
    failed(o, "site-b", p.FailureNotice(reason="out of memory").wire())
    update(o, "site-a")
    with pytest.raises(RoundFailed) as err:
        failed(o, "site-c", p.FailureNotice(reason="refused: ticket.expired", rule="ticket.expired").wire())
    assert str(err.value) == ("round 0: 1 update(s) of 3 silo(s), quorum needs 2; site-b: out of memory; "
                              "site-c: refused: ticket.expired")
    assert not any(t.name == p.AGGREGATE for t in o.context.created)


def test_a_rejected_update_is_reported_and_the_round_goes_on():
    o = collecting()
    for s in SILOS:
        update(o, s)
    aggregate(o, accepted=["site-a", "site-b"], rejected={"site-c": "non_finite: update holds NaN"})
    result = finish(o)
    assert (result.silos["site-c"].state, result.silos["site-c"].reason) == ("rejected", "non_finite: update holds NaN")
    assert result.num_samples == 20 and result.silos["site-a"].num_samples == 10


def test_quorum_lost_to_rejected_updates_fails_the_round_without_evaluating():
    o = collecting()
    for s in SILOS:
        update(o, s)
    with pytest.raises(RoundFailed) as err:
        aggregate(o, accepted=["site-a"], rejected={"site-b": "nonce: stale", "site-c": "size: over the bound"}, model_=False)
    assert str(err.value) == ("round 0: 1 valid update(s) of 3 silo(s), quorum needs 2; site-b: nonce: stale; "
                              "site-c: size: over the bound")
    status = o.context.status
    assert status["phase"] == "failed" and status["rejected"] == {"site-b": "nonce: stale", "site-c": "size: over the bound"}
    assert not any(t.name == p.EVALUATE for t in o.context.created)


def test_a_failing_activity_fails_the_round():
    """Activities are retried by Durable (ACTIVITY_RETRY) before their failure reaches the round."""
    o = collecting()
    for s in SILOS:
        update(o, s)
    with pytest.raises(Exception, match="storage unavailable"):
        o.throw(durable_failure("storage unavailable"))
