"""A federated training run: initial model, then one ``federated_round`` sub-orchestration per round, and
a last evaluate-only round for the final model.

Silos evaluate the model entering each round before they train on it, so round r reports the pooled test
figures of the model round r−1 produced; the run attaches them to round r−1. ``target_accuracy`` stops the
run at the first model that reaches it (that model stays the run's model).

Every ``checkpoint_every`` rounds the run calls ``continue_as_new`` with a compact state (the current
model reference and per-round results), so its history stays bounded however many rounds it has.
Its milestones (started, each round, completed or failed) go to ``observe``: the run's round record,
MLflow tracking and domain events, none of which can fail the run.
"""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc import protocol as p
from orchestrations.clock import clock
from orchestrations.failures import ACTIVITY_RETRY, failure_reason
from orchestrations.observing import observe

bp = df.Blueprint()


def _summary(state: p.RunState, phase: str, **extra) -> dict:
    """Kept small (Durable caps custom status at 16 KB): the rounds' results (and their timelines) are in the
    round record and the report."""
    return {
        "run": state.run_id, "phase": phase, "round": state.next_round, "rounds": state.spec.rounds,
        "model": state.model and state.model.wire(), "metrics": state.latest_metrics(),
        "initial_metrics": state.initial_metrics, **extra,
    }


def _target_reached(spec, metrics: dict, round_: int) -> str | None:
    accuracy = metrics.get("accuracy")
    if spec.target_accuracy is None or accuracy is None or accuracy < spec.target_accuracy:
        return None
    which = "the initial model" if round_ == 0 else f"the model of round {round_ - 1}"
    return (f"target accuracy {spec.target_accuracy} reached by {which} (pooled test accuracy {accuracy:.4f}, "
            f"evaluated by the silos in round {round_}); round {round_}'s training was not adopted")


def _ended(context, state: p.RunState, kind: str, report: dict, **extra) -> p.RunFact:
    return p.RunFact(kind=kind, run_id=state.run_id, at=context.current_utc_datetime, rounds_completed=len(state.rounds),
                     metrics=state.latest_metrics(), model=state.model, report=report, **extra)


@bp.orchestration_trigger(context_name="context")
def federated_training(context: df.DurableOrchestrationContext):
    state = p.RunState.model_validate(context.get_input())
    spec = state.spec
    if state.started is None:
        state = state.model_copy(update={"started": clock(context)})

    if state.model is None:
        context.set_custom_status(_summary(state, "initialising"))
        start = p.RunStart.model_validate((yield context.call_activity_with_retry(
            p.INIT_RUN, ACTIVITY_RETRY, state.wire())))
        state = state.model_copy(update={"model": start.model, "update_bound": start.update_bound})
        yield observe(context, p.RunFact(kind="RunStarted", run_id=state.run_id, at=context.current_utc_datetime,
                                         spec=spec))

    first = state.next_round
    stop_reason = None
    round_ = first
    # Rounds 0..rounds-1 train; each evaluates the model that entered it. One evaluate-only round after
    # the last evaluates the final model.
    while round_ < spec.rounds or (state.rounds and state.rounds[-1].metrics is None):
        evaluate_only = round_ >= spec.rounds
        context.set_custom_status(_summary(state, "evaluating" if evaluate_only else "training"))
        job = p.RoundJob(run_id=state.run_id, round=round_, spec=spec, model=state.model,
                         nonce=str(context.new_uuid()), update_bound=state.update_bound,
                         evaluate_only=evaluate_only)
        started = context.current_utc_datetime
        try:
            result = p.RoundResult.model_validate((yield context.call_sub_orchestrator(
                p.ROUND, job.wire(), instance_id=p.round_instance_id(state.run_id, round_))))
        except Exception as e:  # the round failed (below quorum): keep the last good model, end the run
            failure = failure_reason(e)
            context.set_custom_status(_summary(state, "failed", error=failure))
            report = yield context.call_activity_with_retry(p.WRITE_REPORT, ACTIVITY_RETRY, p.RunOutcome(
                **dict(state), status="failed", error=failure, ended=clock(context)).wire())
            yield observe(context, _ended(context, state, "RunFailed", report, error=failure))
            raise RuntimeError(f"run {state.run_id} stopped at round {round_}: {failure}") from None
        result = result.model_copy(update={"started": started, "ended": context.current_utc_datetime})
        state = state.with_evaluation(result.incoming)
        if state.rounds:  # the last adopted round's model now has its pooled figures: that round is complete
            yield observe(context, p.RunFact(kind="RoundCompleted", run_id=state.run_id, at=result.ended,
                                             result=state.rounds[-1]))
        if evaluate_only:
            break
        stop_reason = _target_reached(spec, result.incoming, round_)
        if stop_reason:
            break
        state = state.model_copy(update={"model": result.model, "rounds": [*state.rounds, result],
                                         "next_round": round_ + 1})
        round_ += 1
        if state.next_round < spec.rounds and (state.next_round - first) >= spec.checkpoint_every:
            context.set_custom_status(_summary(state, "training"))
            context.continue_as_new(state.wire())
            return None

    context.set_custom_status(_summary(state, "reporting"))
    report = yield context.call_activity_with_retry(p.WRITE_REPORT, ACTIVITY_RETRY, p.RunOutcome(
        **dict(state), status="completed", stop_reason=stop_reason, ended=clock(context)).wire())
    yield observe(context, _ended(context, state, "RunCompleted", report, stop_reason=stop_reason))
    context.set_custom_status(_summary(state, "completed", report=report))
    return {"run": state.run_id, "model": state.model.wire(), "metrics": state.latest_metrics(),
            "rounds_completed": len(state.rounds), "report": report, "stop_reason": stop_reason}
