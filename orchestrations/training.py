"""A federated training run: initial model, then one ``federated_round`` sub-orchestration per round.

Every ``checkpoint_every`` rounds the run calls ``continue_as_new`` with a compact state (the current
model reference and per-round results), so its history stays bounded however many rounds it has.
"""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc import protocol as p
from orchestrations.clock import clock
from orchestrations.failures import ACTIVITY_RETRY, failure_reason

bp = df.Blueprint()


def _summary(state: p.RunState, phase: str, **extra) -> dict:
    """The run's custom status (timelines stay out: the status is capped, the report has them)."""
    rounds = state.model_dump(mode="json", exclude={"rounds": {"__all__": {"timeline"}}})["rounds"]
    return {
        "run": state.run_id, "phase": phase, "round": state.next_round, "rounds": state.spec.rounds,
        "model": state.model and state.model.wire(), "metrics": rounds[-1]["metrics"] if rounds else None,
        "history": rounds, **extra,
    }


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

    first = state.next_round
    stop_reason = None
    for round_ in range(first, spec.rounds):
        context.set_custom_status(_summary(state, "training"))
        job = p.RoundJob(run_id=state.run_id, round=round_, spec=spec, model=state.model,
                         nonce=str(context.new_uuid()), update_bound=state.update_bound)
        try:
            result = p.RoundResult.model_validate((yield context.call_sub_orchestrator(
                p.ROUND, job.wire(), instance_id=p.round_instance_id(state.run_id, round_))))
        except Exception as e:  # the round failed (below quorum): keep the last good model, end the run
            failure = failure_reason(e)
            context.set_custom_status(_summary(state, "failed", error=failure))
            yield context.call_activity_with_retry(p.WRITE_REPORT, ACTIVITY_RETRY, p.RunOutcome(
                **dict(state), status="failed", error=failure, ended=clock(context)).wire())
            raise RuntimeError(f"run {state.run_id} stopped at round {round_}: {failure}") from None
        state = state.model_copy(update={"model": result.model, "rounds": [*state.rounds, result],
                                         "next_round": round_ + 1})
        accuracy = result.metrics.get("accuracy")
        if spec.target_accuracy is not None and accuracy is not None and accuracy >= spec.target_accuracy:
            stop_reason = f"target accuracy {spec.target_accuracy} reached at round {round_}"
            break
        if state.next_round < spec.rounds and (state.next_round - first) >= spec.checkpoint_every:
            context.set_custom_status(_summary(state, "training"))
            context.continue_as_new(state.wire())
            return None

    context.set_custom_status(_summary(state, "reporting"))
    report = yield context.call_activity_with_retry(p.WRITE_REPORT, ACTIVITY_RETRY, p.RunOutcome(
        **dict(state), status="completed", stop_reason=stop_reason, ended=clock(context)).wire())
    context.set_custom_status(_summary(state, "completed", report=report))
    return {"run": state.run_id, "model": state.model.wire(), "metrics": state.rounds[-1].metrics,
            "rounds_completed": len(state.rounds), "report": report, "stop_reason": stop_reason}
