"""``federated_round``, every branch, with a scripted Durable context: what the round asks for (activities,
event waits, its deadline timer) and what it decides as each silo's update, evaluation, failure or silence
arrives; each silo's time and figures, and the round's timeline on the orchestration clock."""
from __future__ import annotations

from datetime import timedelta

import pytest
from durable_fake import T0, AnyOf, FakeContext, Orchestration, Task, durable_failure, model

from fedfunc import protocol as p
from fedfunc.spec import RunSpec
from orchestrations.failures import ACTIVITY_RETRY
from orchestrations.round import RoundFailed, federated_round

SILOS = ["ann", "bob", "cat"]
MANIFEST = "run-1/rounds/0000/manifest.json"
DEADLINE = T0 + timedelta(seconds=60)
SILENT = f"no result before the deadline {DEADLINE.isoformat()}"


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
    start = o.pending  # one activity starts the round's jobs
    assert (start.kind, start.name, start.retry) == ("activity", p.START_SILO_JOBS, ACTIVITY_RETRY)  # retried
    order = p.SiloJobsOrder.model_validate(start.input)
    assert order.modes == dict.fromkeys(ready, "train")
    assert order.job.manifest == MANIFEST and order.job.deadline == DEADLINE
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


def activity(o: Orchestration, name: str) -> Task:
    """The pending activity ``name``: awaited alone, or side by side with another (a ``task_any``)."""
    tasks = o.pending.tasks if isinstance(o.pending, AnyOf) else [o.pending]
    [task] = [t for t in tasks if isinstance(t, Task) and (t.kind, t.name) == ("activity", name)]
    assert task.retry == ACTIVITY_RETRY
    return task


def complete(o: Orchestration, task: Task, result=None, *, error: Exception | None = None):
    """``task`` (pending alone or in a ``task_any``) ends with ``result``, or fails with ``error``."""
    if isinstance(o.pending, AnyOf):
        return o.fire(task, result, error=error)
    assert task is o.pending
    return o.throw(error) if error else o.send(result)


def aggregate(o: Orchestration, accepted: list[str], rejected: dict[str, str] | None = None, *, model_=True):
    """Answer the pending ``aggregate`` with ``accepted`` (10 samples each) and ``rejected`` updates."""
    result = p.AggregateResult(accepted=accepted, samples={s: 10 for s in accepted}, num_samples=10 * len(accepted),
                               rejected=[p.Rejection(silo=s, reason=r) for s, r in (rejected or {}).items()],
                               model=model(1) if model_ else None)
    return complete(o, activity(o, p.AGGREGATE), result.wire())


def pool(o: Orchestration, metrics=None) -> p.EvaluationOrder:
    """Answer the pending ``pool_evaluations`` (the silos' figures for the model that entered the round)."""
    task = activity(o, p.POOL_EVALUATIONS)
    order = p.EvaluationOrder.model_validate(task.input)
    assert order.job.model.wire() == model(0)  # what was evaluated is the model the silos received
    o.pooled = order
    complete(o, task, p.RoundEvaluation(metrics=metrics or {"loss": 0.5, "accuracy": 0.8}, evaluated=order.silos).wire())
    return order


def finish(o: Orchestration, metrics=None) -> p.RoundResult:
    """The last pooling answered: the round's result."""
    pool(o, metrics)
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

    update(o, "bob")
    events, same_timer = waits(o)
    assert same_timer is timer and set(events) == {p.update_event("ann"), p.failed_event("ann"),
                                                   p.update_event("cat"), p.failed_event("cat")}
    assert (o.context.status["received"], o.context.status["missing"]) == (["bob"], ["ann", "cat"])
    update(o, "ann")
    update(o, "cat")
    assert timer.cancelled  # nothing left to wait for: the deadline timer does not keep the instance alive
    order = p.AggregateOrder.model_validate(activity(o, p.AGGREGATE).input)
    assert sorted(order.updates) == SILOS and order.updates["ann"].path == "runs/run-1/ann/update.safetensors"
    pooling = activity(o, p.POOL_EVALUATIONS)  # ordered with the aggregation: both judge what the silos sent
    assert {t.name for t in o.pending.tasks} == {p.AGGREGATE, p.POOL_EVALUATIONS}
    assert p.EvaluationOrder.model_validate(pooling.input).silos == SILOS
    aggregate(o, accepted=SILOS)
    result = finish(o, {"loss": 0.4, "accuracy": 0.9})
    assert o.pooled.silos == SILOS and o.pooled.evaluators == []
    assert result.model.wire() == model(1) and result.incoming == {"loss": 0.4, "accuracy": 0.9}
    assert result.metrics is None  # the new model's figures come with the next round
    assert result.num_samples == 30
    assert {s: (x.state, x.num_samples) for s, x in result.silos.items()} == {s: ("received", 10) for s in SILOS}
    assert o.context.status["phase"] == "done" and o.context.status["incoming"]["accuracy"] == 0.9
    assert o.context.status["evaluate_only"] is False
    assert (result.timeline.started, result.timeline.evaluated) == (T0, T0)  # the orchestration clock
    assert {s: t.raised for s, t in result.timeline.silos.items()} == {s: T0 for s in SILOS}


def test_deadline_fails_the_silent_silo_and_the_round_goes_on_at_quorum():
    o = collecting()
    update(o, "ann")
    update(o, "bob")
    deadline(o)
    order = p.AggregateOrder.model_validate(activity(o, p.AGGREGATE).input)
    assert sorted(order.updates) == ["ann", "bob"]
    aggregate(o, accepted=["ann", "bob"])
    result = finish(o)
    assert result.silos["cat"].state == "failed" and result.silos["cat"].reason == SILENT
    assert result.silos["cat"].num_samples is None


def test_deadline_below_quorum_fails_the_round_naming_each_silent_silo():
    o = collecting()
    update(o, "ann")
    with pytest.raises(RoundFailed) as err:
        deadline(o)
    assert str(err.value) == f"round 0: 1 update(s) of 3 silo(s), quorum needs 2; bob: {SILENT}; cat: {SILENT}"
    status = o.context.status
    assert status["phase"] == "failed" and status["failed"] == {"bob": SILENT, "cat": SILENT}
    assert status["received"] == ["ann"]
    assert not any(t.name == p.AGGREGATE for t in o.context.created)  # nothing aggregated, the last model stays


@pytest.mark.parametrize("ready, spec, message", [
    (["ann"], {"min_silos": 2}, "round 0: 1 ready silo(s), quorum needs 2"),
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
    o = collecting(errors={"cat": error})
    events, _ = waits(o)
    assert set(events) == {p.update_event("ann"), p.failed_event("ann"), p.update_event("bob"), p.failed_event("bob")}
    assert o.context.status["failed"] == {"cat": error}
    update(o, "ann")
    update(o, "bob")  # every started silo answered: no wait for the deadline
    aggregate(o, accepted=["ann", "bob"])
    result = finish(o)
    assert (result.silos["cat"].state, result.silos["cat"].reason) == ("failed", error)


def test_every_submission_failing_ends_the_round_at_once():
    o = prepared()
    with pytest.raises(RoundFailed) as err:
        o.send([p.SiloJobStarted(silo=s, error=f"job submission failed: {s} unreachable").wire() for s in SILOS])
    [timer] = [t for t in o.context.created if t.kind == "timer"]
    assert timer.cancelled and not any(t.kind == "event" for t in o.context.created)
    assert str(err.value) == ("round 0: 0 update(s) of 3 silo(s), quorum needs 2; "
                              "ann: job submission failed: ann unreachable; bob: job submission failed: bob unreachable; "
                              "cat: job submission failed: cat unreachable")


@pytest.mark.parametrize("notice, reason", [
    (p.FailureNotice(reason="data has shape (5, 3), the task needs (n, 64)").wire(),
     "data has shape (5, 3), the task needs (n, 64)"),
    (p.FailureNotice(reason="refused: bundle.unsigned", rule="bundle.unsigned").wire(), "refused: bundle.unsigned"),
    (None, "job failed"),
])
def test_a_failed_silo_is_reported_with_its_reason_and_its_update_no_longer_awaited(notice, reason):
    o = collecting()
    failed(o, "cat", notice)
    events, _ = waits(o)
    assert p.update_event("cat") not in events and p.failed_event("cat") not in events
    update(o, "ann")
    update(o, "bob")
    aggregate(o, accepted=["ann", "bob"])
    result = finish(o)
    assert (result.silos["cat"].state, result.silos["cat"].reason) == ("failed", reason)


def test_an_update_after_the_silos_failure_is_not_awaited_and_a_failure_after_its_update_neither():
    o = collecting()
    update(o, "ann")
    events, _ = waits(o)
    assert p.failed_event("ann") not in events  # a's later failure note cannot undo its update
    failed(o, "bob", None)
    events, _ = waits(o)
    assert p.update_event("bob") not in events
    assert set(events) == {p.update_event("cat"), p.failed_event("cat")}


def test_quorum_lost_to_failures_fails_the_round_with_every_reason():
    o = collecting()
    failed(o, "bob", p.FailureNotice(reason="out of memory").wire())
    update(o, "ann")
    with pytest.raises(RoundFailed) as err:
        failed(o, "cat", p.FailureNotice(reason="refused: ticket.expired", rule="ticket.expired").wire())
    assert str(err.value) == ("round 0: 1 update(s) of 3 silo(s), quorum needs 2; bob: out of memory; "
                              "cat: refused: ticket.expired")
    assert not any(t.name == p.AGGREGATE for t in o.context.created)


def test_a_rejected_update_is_reported_and_the_round_goes_on():
    o = collecting()
    for s in SILOS:
        update(o, s)
    aggregate(o, accepted=["ann", "bob"], rejected={"cat": "non_finite: update holds NaN"})
    assert pool(o).silos == SILOS  # pooled while aggregating, over every silo that answered
    assert o.context.status["phase"] == "pooling evaluations"
    result = finish(o)
    assert o.pooled.silos == ["ann", "bob"]  # pooled again: a rejected silo's figures are not trusted either
    assert (result.silos["cat"].state, result.silos["cat"].reason) == ("rejected", "non_finite: update holds NaN")
    assert result.num_samples == 20 and result.silos["ann"].num_samples == 10


def test_quorum_lost_to_rejected_updates_fails_the_round_with_its_evaluations_pooled_without_them():
    o = collecting()
    for s in SILOS:
        update(o, s)
    aggregate(o, accepted=["ann"], rejected={"bob": "nonce: stale", "cat": "size: over the bound"}, model_=False)
    pool(o)
    with pytest.raises(RoundFailed) as err:
        pool(o)
    assert o.pooled.silos == ["ann"]  # the round's evaluation record counts no untrusted silo
    assert str(err.value) == ("round 0: 1 valid update(s) of 3 silo(s), quorum needs 2; bob: nonce: stale; "
                              "cat: size: over the bound")
    status = o.context.status
    assert status["phase"] == "failed" and status["rejected"] == {"bob": "nonce: stale", "cat": "size: over the bound"}


@pytest.mark.parametrize("failing", [p.AGGREGATE, p.POOL_EVALUATIONS])
@pytest.mark.parametrize("first", [True, False])
def test_a_failing_activity_fails_the_round(failing, first):
    """Activities are retried by Durable (ACTIVITY_RETRY) before their failure reaches the round; aggregating
    and pooling side by side, either failing (ending first or last) fails it."""
    o = collecting()
    for s in SILOS:
        update(o, s)
    fails, other = activity(o, failing), activity(o, ({p.AGGREGATE, p.POOL_EVALUATIONS} - {failing}).pop())
    ok = {p.AGGREGATE: p.AggregateResult(accepted=SILOS, model=model(1)).wire(), p.POOL_EVALUATIONS: {}}
    with pytest.raises(Exception, match="storage unavailable"):
        for task in ([fails, other] if first else [other, fails]):
            complete(o, task, None if task is fails else ok[task.name],
                     error=durable_failure("storage unavailable") if task is fails else None)


def evaluated(o: Orchestration, silo: str):
    events, _ = waits(o)
    return o.fire(events[p.evaluated_event(silo)], p.UpdateNotice(
        path=f"runs/run-1/{silo}/evaluation.safetensors", etag="0x1", size=10).wire())


def test_an_evaluator_silo_only_evaluates_and_its_figures_are_pooled_apart():
    o = Orchestration(federated_round, FakeContext(round_job(evaluators=["held"]).wire(), instance_id="run-1:r0"))
    o.send(p.RoundPlan(silos=SILOS, evaluators=["held"], manifest=MANIFEST).wire())
    orders = p.SiloJobsOrder.model_validate(o.pending.input).modes
    assert orders == {**{s: "train" for s in SILOS}, "held": "evaluate"}
    o.send([p.SiloJobStarted(silo=s, job_id=f"job-{s}").wire() for s in orders])
    events, _ = waits(o)
    assert p.evaluated_event("held") in events and p.update_event("held") not in events
    evaluated(o, "held")
    for s in SILOS:
        update(o, s)
    assert sorted(p.AggregateOrder.model_validate(activity(o, p.AGGREGATE).input).updates) == SILOS  # the evaluator sends none
    aggregate(o, accepted=SILOS)
    result = finish(o)
    assert (o.pooled.silos, o.pooled.evaluators) == (SILOS, ["held"])
    assert result.silos["held"].state == "evaluated" and result.num_samples == 30


def test_the_evaluate_only_round_aggregates_nothing_and_returns_the_pooled_figures():
    job = round_job().model_copy(update={"evaluate_only": True})
    o = Orchestration(federated_round, FakeContext(job.wire(), instance_id="run-1:r1"))
    o.send(p.RoundPlan(silos=SILOS, evaluators=["held"], manifest=MANIFEST).wire())
    orders = p.SiloJobsOrder.model_validate(o.pending.input).modes
    assert orders == {s: "evaluate" for s in [*SILOS, "held"]}  # nobody trains
    assert o.context.status["needed"] == 0 and o.context.status["evaluate_only"] is True
    o.send([p.SiloJobStarted(silo=s, job_id=f"job-{s}").wire() for s in orders])
    events, _ = waits(o)
    assert not any(p.update_event(s) in events for s in orders)  # no update is awaited from anyone
    evaluated(o, "held")
    evaluated(o, "ann")
    evaluated(o, "bob")
    deadline(o)  # a silent silo does not fail an evaluate-only round (it needs no quorum)
    result = finish(o, {"loss": 0.3, "accuracy": 0.93})
    assert not any(t.name == p.AGGREGATE for t in o.context.created)
    assert result.model is None and result.incoming["accuracy"] == 0.93
    assert (o.pooled.silos, o.pooled.evaluators) == (["ann", "bob"], ["held"])
    assert result.silos["cat"].state == "failed" and result.silos["cat"].reason == SILENT
    assert {s: result.silos[s].state for s in ("ann", "bob", "held")} == dict.fromkeys(("ann", "bob", "held"), "evaluated")
    assert result.num_samples == 0 and result.timeline.aggregated is None and result.timeline.evaluated == DEADLINE


def test_no_evaluation_at_all_still_ends_an_evaluate_only_round():
    """Every silo silent: nothing to pool but the round (needing no quorum) ends, its figures empty."""
    job = round_job().model_copy(update={"evaluate_only": True})
    o = Orchestration(federated_round, FakeContext(job.wire(), instance_id="run-1:r1"))
    o.send(p.RoundPlan(silos=SILOS, manifest=MANIFEST).wire())
    o.send([p.SiloJobStarted(silo=s, error="job submission failed: quota").wire() for s in SILOS])
    task = activity(o, p.POOL_EVALUATIONS)
    order = p.EvaluationOrder.model_validate(task.input)
    assert (order.silos, order.evaluators) == ([], [])
    complete(o, task, p.RoundEvaluation().wire())
    result = p.RoundResult.model_validate(o.output)
    assert result.incoming == {} and {x.state for x in result.silos.values()} == {"failed"}


def test_an_evaluator_that_fails_is_reported_and_its_figures_are_not_pooled():
    o = Orchestration(federated_round, FakeContext(round_job(evaluators=["held"]).wire(), instance_id="run-1:r0"))
    o.send(p.RoundPlan(silos=SILOS, evaluators=["held"], manifest=MANIFEST).wire())
    o.send([p.SiloJobStarted(silo=s, job_id=f"job-{s}").wire() for s in [*SILOS, "held"]])
    failed(o, "held", p.FailureNotice(reason="held-out set missing").wire())
    events, _ = waits(o)
    assert p.evaluated_event("held") not in events
    for s in SILOS:
        update(o, s)
    aggregate(o, accepted=SILOS)
    result = finish(o)
    assert (o.pooled.silos, o.pooled.evaluators) == (SILOS, [])
    assert (result.silos["held"].state, result.silos["held"].reason) == ("failed", "held-out set missing")


def test_each_silos_time_metrics_clip_and_capped_weight_reach_the_round_result():
    """On the orchestration clock from the round's start: the per-silo view ``observe`` and the run page
    show (time, the silo's own metrics, whether its clip step scaled it), with the weight a sample cap gave it."""
    o = collecting()
    o.context.advance(T0 + timedelta(seconds=5))
    update(o, "ann")
    status = o.context.status
    assert status["started"] == T0.isoformat() and status["silos"]["ann"] == p.SiloOutcome(
        state="received", seconds=5.0).wire()
    o.context.advance(T0 + timedelta(seconds=8))
    update(o, "bob")
    o.context.advance(T0 + timedelta(seconds=9))
    failed(o, "cat", p.FailureNotice(reason="out of memory").wire())
    cap = p.SampleCap(reported=900, used=5, by="registered max_samples")
    received = {s: p.Received(path=f"runs/run-1/{s}/update.safetensors", sha256="0" * 64, metrics={"loss": loss},
                              clipped=s == "bob")
                for s, loss in (("ann", 0.3), ("bob", 0.4))}
    complete(o, activity(o, p.AGGREGATE), p.AggregateResult(
        accepted=["ann", "bob"], samples={"ann": 10, "bob": 5}, num_samples=15, received=received,
        capped={"bob": cap}, model=model(1)).wire())
    silos = finish(o).silos
    assert (silos["ann"].seconds, silos["ann"].metrics, silos["ann"].capped, silos["ann"].clipped) == (
        5.0, {"loss": 0.3}, None, False)
    assert (silos["bob"].seconds, silos["bob"].num_samples, silos["bob"].capped, silos["bob"].clipped) == (
        8.0, 5, cap, True)
    assert (silos["cat"].state, silos["cat"].seconds, silos["cat"].metrics, silos["cat"].clipped) == (
        "failed", 9.0, None, None)


def test_a_rejected_silo_keeps_its_time_but_not_its_weight():
    o = collecting()
    for second, s in enumerate(SILOS, start=1):
        o.context.advance(T0 + timedelta(seconds=second))
        update(o, s)
    aggregate(o, accepted=["ann", "bob"], rejected={"cat": "norm: over the bound"})
    pool(o)
    cat = finish(o).silos["cat"]
    assert (cat.state, cat.reason, cat.seconds, cat.num_samples, cat.metrics) == (
        "rejected", "norm: over the bound", 3.0, None, None)


def test_the_timeline_stamps_each_round_step_on_its_clock_and_each_silos_steps_from_who_saw_them():
    at = {step: T0 + timedelta(seconds=s) for step, s in
          (("planned", 1), ("submitted", 2), ("ann", 4), ("bob", 6), ("evaluated", 8), ("aggregated", 9))}
    silo_steps = {"queued": T0 + timedelta(seconds=2.5), "started": T0 + timedelta(seconds=3),
                  "trained": T0 + timedelta(seconds=3.5)}
    o = Orchestration(federated_round, FakeContext(round_job().wire(), instance_id="run-1:r0"))
    o.context.advance(at["planned"])
    o.send(p.RoundPlan(silos=["ann", "bob"], manifest=MANIFEST).wire())
    o.context.advance(at["submitted"])
    o.send([p.SiloJobStarted(silo=s, job_id=f"job-{s}", submitted=T0 + timedelta(seconds=1.5)).wire()
            for s in ("ann", "bob")])
    for s in ("ann", "bob"):
        o.context.advance(at[s])
        events, _ = waits(o)
        o.fire(events[p.update_event(s)], p.UpdateNotice(
            path=f"runs/run-1/{s}/update.safetensors", landed=at[s] - timedelta(seconds=0.5),
            delivered=at[s] - timedelta(seconds=0.25)).wire())
    o.context.advance(at["evaluated"])  # pooling ends first; each of the two is stamped when it ends
    complete(o, activity(o, p.POOL_EVALUATIONS), p.RoundEvaluation(metrics={"accuracy": 0.5}).wire())
    o.context.advance(at["aggregated"])
    received = {s: p.Received(path=f"runs/run-1/{s}/update.safetensors", metrics={}, times=p.JobTimes(**silo_steps))
                for s in ("ann",)}  # bob's update carried no times of its own
    complete(o, activity(o, p.AGGREGATE), p.AggregateResult(accepted=["ann", "bob"], samples={"ann": 1, "bob": 1},
                                                            num_samples=2, received=received, model=model(1)).wire())
    timeline = p.RoundResult.model_validate(o.output).timeline
    assert (timeline.started, timeline.planned, timeline.submitted, timeline.collected, timeline.aggregated,
            timeline.evaluated) == (T0, at["planned"], at["submitted"], at["bob"], at["aggregated"], at["evaluated"])
    assert timeline.silos["ann"] == p.SiloTimeline(
        submitted=T0 + timedelta(seconds=1.5), **silo_steps, landed=at["ann"] - timedelta(seconds=0.5),
        delivered=at["ann"] - timedelta(seconds=0.25), raised=at["ann"])
    assert timeline.silos["bob"] == p.SiloTimeline(
        submitted=T0 + timedelta(seconds=1.5), landed=at["bob"] - timedelta(seconds=0.5),
        delivered=at["bob"] - timedelta(seconds=0.25), raised=at["bob"])


def test_a_replayed_step_leaves_the_status_alone_and_the_first_new_step_sets_it_whole():
    """While Durable replays history the round does not rebuild its status (O(silos) each step, thrown away);
    the first step past the replay shows everything the replayed steps decided."""
    o = Orchestration(federated_round, FakeContext(round_job().wire(), instance_id="run-1:r0"))
    o.context.replaying(True)
    o.send(p.RoundPlan(silos=SILOS, manifest=MANIFEST).wire())
    o.send([p.SiloJobStarted(silo=s, job_id=f"job-{s}").wire() for s in SILOS])
    update(o, "ann")
    assert o.context.statuses == []
    o.context.replaying(False)
    update(o, "bob")
    status = o.context.status
    assert (status["phase"], status["received"], status["missing"]) == ("collecting", ["ann", "bob"], ["cat"])
    o.context.replaying(True)
    update(o, "cat")  # the round's decisions are set whether or not replayed: the status must end right
    assert o.context.status["phase"] == "aggregating"
    aggregate(o, accepted=SILOS)
    assert o.context.status["phase"] == "aggregating"
    finish(o)
    assert o.context.status["phase"] == "done"


def test_an_aggregation_that_cannot_run_fails_the_round_with_its_reason():
    """A robust rule left with too few updates, or an unusable strategy state: no model, and the round says why."""
    o = collecting()
    for s in SILOS:
        update(o, s)
    why = "krum needs at least 4 updates for f=1, got 2"
    complete(o, activity(o, p.AGGREGATE), p.AggregateResult(
        accepted=["ann", "bob"], rejected=[p.Rejection(silo="cat", reason="nonce: stale")], error=why).wire())
    pool(o)
    with pytest.raises(RoundFailed) as err:
        pool(o)
    assert str(err.value) == f"round 0: {why}"
    status = o.context.status
    assert (status["phase"], status["error"], status["rejected"]) == ("failed", why, {"cat": "nonce: stale"})
