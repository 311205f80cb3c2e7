"""One FL round: manifest → start every silo's job → collect updates racing a deadline → aggregate while
pooling the silos' evaluations of the model that entered the round.

Each training job first evaluates the incoming global model on its silo's test part, then trains; an
evaluator silo (a held-out set) only evaluates. The round after the last one is ``evaluate_only``: every
silo evaluates the final model and nobody trains. Runs as the sub-orchestration ``{run}:r{round}``; silo
events (``update:{silo}`` / ``evaluated:{silo}`` / ``failed:{silo}``) are raised to that id, so an event
meant for a finished round can never reach the next one.
"""
from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from fedfunc import protocol as p
from orchestrations.clock import clock
from orchestrations.failures import ACTIVITY_RETRY

bp = df.Blueprint()


class RoundFailed(Exception):
    """A round that cannot produce a new global model (below quorum); the last good model stays."""


def _status(job: p.RoundJob, phase: str, outcomes: dict[str, p.SiloOutcome], **extra) -> dict:
    def having(state: str) -> dict[str, str | None]:
        return {s: o.reason for s, o in sorted(outcomes.items()) if o.state == state}

    return {"round": job.round, "phase": phase, "evaluate_only": job.evaluate_only,
            "received": list(having("received")), "evaluated": list(having("evaluated")),
            "missing": list(having("waiting")), "failed": having("failed"), "rejected": having("rejected"),
            "silos": {s: o.wire() for s, o in sorted(outcomes.items())}, **extra}


def _show(context: df.DurableOrchestrationContext, job: p.RoundJob, phase: str, outcomes: dict[str, p.SiloOutcome],
          **extra) -> None:
    """Set the round's custom status, except while replaying: every episode ends past its replay, where
    the status is set again, so building it on replayed steps (O(silos) each) would only be thrown away."""
    if not context.is_replaying:
        context.set_custom_status(_status(job, phase, outcomes, **extra))


def _quorum_lost(job: p.RoundJob, what: str, count: int, needed: int, outcomes: dict[str, p.SiloOutcome]) -> RoundFailed:
    why = "; ".join(f"{s}: {o.reason}" for s, o in sorted(outcomes.items()) if o.state in ("failed", "rejected"))
    return RoundFailed(f"round {job.round}: {count} {what} of {len(outcomes)} silo(s), quorum needs {needed}"
                       + (f"; {why}" if why else ""))


def _pool(context: df.DurableOrchestrationContext, job: p.RoundJob, silos: list[str], evaluators: list[str]):
    """The task pooling ``silos``' evaluations into the test figures and ``evaluators``' into the held-out ones."""
    return context.call_activity_with_retry(p.POOL_EVALUATIONS, ACTIVITY_RETRY, p.EvaluationOrder(
        job=job, silos=[s for s in silos if s not in evaluators],
        evaluators=[s for s in silos if s in evaluators]).wire())


@bp.orchestration_trigger(context_name="context")
def federated_round(context: df.DurableOrchestrationContext):
    job = p.RoundJob.model_validate(context.get_input())
    times = {"started": clock(context)}
    silo_times: dict[str, dict] = {}
    start = times["started"]
    deadline = start + timedelta(seconds=job.spec.round_deadline_s)
    job = job.model_copy(update={"deadline": deadline})

    plan = p.RoundPlan.model_validate((yield context.call_activity_with_retry(
        p.PREPARE_ROUND, ACTIVITY_RETRY, job.wire())))
    times["planned"] = clock(context)
    job = job.model_copy(update={"manifest": plan.manifest})
    modes = plan.modes(job.evaluate_only)
    trainers = [s for s, mode in modes.items() if mode == "train"]
    needed = 0 if job.evaluate_only else job.spec.needed(len(trainers))
    outcomes = {s: p.SiloOutcome(state="waiting") for s in modes}
    if len(trainers) < needed:
        raise RoundFailed(f"round {job.round}: {len(trainers)} ready silo(s), quorum needs {needed}")

    _show(context, job, "starting jobs", outcomes, needed=needed)
    started = yield context.call_activity_with_retry(  # idempotent (one job per run, round, silo): retried
        p.START_SILO_JOBS, ACTIVITY_RETRY, p.SiloJobsOrder(job=job, modes=modes).wire())
    times["submitted"] = clock(context)
    jobs = {}
    for answer in map(p.SiloJobStarted.model_validate, started):
        silo_times[answer.silo] = {"submitted": answer.submitted}
        if answer.error:
            outcomes[answer.silo] = p.SiloOutcome(state="failed", reason=answer.error)
        else:
            jobs[answer.silo] = answer.job_id

    # Wait for each job's last artifact (an update, or an evaluation) or its failure, all racing one deadline.
    waits = {}
    for silo in jobs:
        done = p.update_event(silo) if modes[silo] == "train" else p.evaluated_event(silo)
        waits[context.wait_for_external_event(done)] = (silo, modes[silo])
        waits[context.wait_for_external_event(p.failed_event(silo))] = (silo, "failed")
    timer = context.create_timer(deadline)
    updates: dict[str, p.UpdateNotice] = {}
    while waits:
        _show(context, job, "collecting", outcomes, needed=needed, jobs=jobs, started=start.isoformat(),
              deadline=deadline.isoformat())
        winner = yield context.task_any([*waits, timer])
        if winner is timer:
            break
        silo, kind = waits.pop(winner)
        for task in [t for t, (s, _) in waits.items() if s == silo]:
            del waits[task]
        silo_times[silo]["raised"] = clock(context)
        seconds = (context.current_utc_datetime - start).total_seconds()
        if kind == "train":
            updates[silo] = p.UpdateNotice.model_validate(winner.result)
            outcomes[silo] = p.SiloOutcome(state="received", seconds=seconds)
            silo_times[silo].update(landed=updates[silo].landed, delivered=updates[silo].delivered)
        elif kind == "evaluate":
            outcomes[silo] = p.SiloOutcome(state="evaluated", seconds=seconds)
        else:
            outcomes[silo] = p.SiloOutcome(state="failed", reason=p.FailureNotice.model_validate(
                winner.result or {}).reason, seconds=seconds)
    if not timer.is_completed:
        timer.cancel()
    times["collected"] = clock(context)
    for silo, o in outcomes.items():
        if o.state == "waiting":
            outcomes[silo] = p.SiloOutcome(state="failed", reason=f"no result before the deadline {deadline.isoformat()}")

    if len(updates) < needed:
        context.set_custom_status(_status(job, "failed", outcomes, needed=needed))
        raise _quorum_lost(job, "update(s)", len(updates), needed, outcomes)

    # Pool the silos' evaluations of the model that entered the round while the updates are aggregated:
    # they judge that model, not the new one. Figures of silos whose update aggregation rejects are not
    # trusted either: those are pooled again without them.
    context.set_custom_status(_status(job, "pooling evaluations" if job.evaluate_only else "aggregating", outcomes,
                                      needed=needed))
    done = [s for s, o in outcomes.items() if o.state in ("received", "evaluated")]
    pooling = _pool(context, job, done, plan.evaluators)
    steps = {pooling: "evaluated"}
    if not job.evaluate_only:
        aggregating = context.call_activity_with_retry(p.AGGREGATE, ACTIVITY_RETRY,
                                                       p.AggregateOrder(job=job, updates=updates).wire())
        steps[aggregating] = "aggregated"
    while steps:
        finished = yield context.task_any(list(steps))
        times[steps.pop(finished)] = clock(context)
    if not job.evaluate_only:
        agg = p.AggregateResult.model_validate((yield aggregating))  # already done: its result, or its failure
        for silo, got in agg.received.items():
            silo_times[silo].update(got.times.model_dump(exclude_none=True))
        for r in agg.rejected:
            outcomes[r.silo] = p.SiloOutcome(state="rejected", reason=r.reason, seconds=outcomes[r.silo].seconds)
        if any(r.silo in done for r in agg.rejected):
            _show(context, job, "pooling evaluations", outcomes, needed=needed)
            pooling = _pool(context, job, [s for s in done if outcomes[s].state != "rejected"], plan.evaluators)
            yield pooling
            times["evaluated"] = clock(context)
        if agg.error:
            context.set_custom_status(_status(job, "failed", outcomes, needed=needed, error=agg.error))
            raise RoundFailed(f"round {job.round}: {agg.error}")
        if agg.model is None:
            context.set_custom_status(_status(job, "failed", outcomes, needed=needed))
            raise _quorum_lost(job, "valid update(s)", len(agg.accepted), needed, outcomes)
    evaluation = p.RoundEvaluation.model_validate((yield pooling))
    timeline = p.RoundTimeline(**times, silos={s: p.SiloTimeline(**t) for s, t in silo_times.items()})
    context.set_custom_status(_status(job, "done", outcomes, needed=needed, incoming=evaluation.metrics))
    if job.evaluate_only:
        return p.RoundResult(round=job.round, incoming=evaluation.metrics, silos=outcomes, timeline=timeline).wire()
    silos = {s: o.model_copy(update={"num_samples": agg.samples.get(s), "capped": agg.capped.get(s),
                                     "clipped": agg.received[s].clipped if s in agg.received else None,
                                     "metrics": agg.received[s].metrics if s in agg.received else None})
             for s, o in outcomes.items()}
    return p.RoundResult(round=job.round, model=agg.model, incoming=evaluation.metrics, num_samples=agg.num_samples,
                         silos=silos, timeline=timeline).wire()
