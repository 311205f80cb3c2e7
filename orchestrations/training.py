"""A federated training run: initial model, then one ``federated_round`` sub-orchestration per round.

Every ``checkpoint_every`` rounds the run calls ``continue_as_new`` with a compact state (the current
model reference and per-round metrics), so its history stays bounded however many rounds it has.
"""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc.protocol import round_instance_id
from fedfunc.spec import RunSpec
from orchestrations.round import ACTIVITY_RETRY

bp = df.Blueprint()


def _summary(state: dict, phase: str, **extra) -> dict:
    rounds = state["rounds"]
    return {
        "run": state["run_id"], "phase": phase, "round": state["next_round"],
        "rounds": state["spec"]["rounds"], "model": state.get("model"),
        "metrics": rounds[-1]["metrics"] if rounds else None, "history": rounds, **extra,
    }


@bp.orchestration_trigger(context_name="context")
def federated_training(context: df.DurableOrchestrationContext):
    state = context.get_input()
    spec = RunSpec.model_validate(state["spec"])
    run_id = state["run_id"]
    state.setdefault("rounds", [])
    state.setdefault("next_round", 0)

    if state.get("model") is None:
        context.set_custom_status(_summary(state, "initialising"))
        state["model"] = yield context.call_activity_with_retry("init_run", ACTIVITY_RETRY, {
            "run_id": run_id, "spec": state["spec"]})

    first = state["next_round"]
    stop_reason = None
    for round_ in range(first, spec.rounds):
        context.set_custom_status(_summary(state, "training"))
        job = {"run_id": run_id, "round": round_, "spec": state["spec"], "model": state["model"],
               "nonce": str(context.new_uuid())}
        try:
            result = yield context.call_sub_orchestrator(
                "federated_round", job, instance_id=round_instance_id(run_id, round_))
        except Exception as e:  # the round failed (below quorum): keep the last good model, end the run
            failure = str(e).split("$OutOfProcData$")[0].strip()
            context.set_custom_status(_summary(state, "failed", error=failure))
            yield context.call_activity_with_retry("write_report", ACTIVITY_RETRY, {
                **state, "status": "failed", "error": failure})
            raise RuntimeError(f"run {run_id} stopped at round {round_}: {failure}") from None
        state["model"] = result["model"]
        state["rounds"].append({k: result[k] for k in ("round", "metrics", "num_samples", "silos")})
        state["next_round"] = round_ + 1
        accuracy = result["metrics"].get("accuracy")
        if spec.target_accuracy is not None and accuracy is not None and accuracy >= spec.target_accuracy:
            stop_reason = f"target accuracy {spec.target_accuracy} reached at round {round_}"
            break
        if state["next_round"] < spec.rounds and (state["next_round"] - first) >= spec.checkpoint_every:
            context.set_custom_status(_summary(state, "training"))
            context.continue_as_new(state)
            return None

    context.set_custom_status(_summary(state, "reporting"))
    report = yield context.call_activity_with_retry("write_report", ACTIVITY_RETRY, {
        **state, "status": "completed", "stop_reason": stop_reason})
    context.set_custom_status(_summary(state, "completed", report=report))
    return {"run": run_id, "model": state["model"], "metrics": state["rounds"][-1]["metrics"],
            "rounds_completed": len(state["rounds"]), "report": report, "stop_reason": stop_reason}
