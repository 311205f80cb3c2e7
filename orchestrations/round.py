"""One FL round: manifest → start every silo's job → collect updates racing a deadline → aggregate → evaluate.

Runs as the sub-orchestration ``{run}:r{round}``; silo events (``update:{silo}`` / ``failed:{silo}``)
are raised to that id, so an event meant for a finished round can never reach the next one.
"""
from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from fedfunc.protocol import failed_event, update_event
from fedfunc.spec import RunSpec

bp = df.Blueprint()

# Activities are idempotent; a transient storage or submit error is retried before the silo counts as failed.
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


class RoundFailed(Exception):
    """A round that cannot produce a new global model (below quorum); the last good model stays."""


def _status(round_: int, phase: str, outcomes: dict, **extra) -> dict:
    return {
        "round": round_, "phase": phase,
        "received": sorted(s for s, o in outcomes.items() if o["state"] == "received"),
        "missing": sorted(s for s, o in outcomes.items() if o["state"] == "waiting"),
        "failed": {s: o["reason"] for s, o in outcomes.items() if o["state"] == "failed"},
        "rejected": {s: o["reason"] for s, o in outcomes.items() if o["state"] == "rejected"},
        **extra,
    }


@bp.orchestration_trigger(context_name="context")
def federated_round(context: df.DurableOrchestrationContext):
    job = context.get_input()
    spec = RunSpec.model_validate(job["spec"])
    round_ = job["round"]
    deadline = context.current_utc_datetime + timedelta(seconds=spec.round_deadline_s)

    job = {**job, "deadline": deadline.isoformat()}
    plan = yield context.call_activity_with_retry("prepare_round", ACTIVITY_RETRY, job)
    silos = plan["silos"]
    needed = spec.needed(len(silos))
    outcomes = {s: {"state": "waiting", "reason": None} for s in silos}
    if len(silos) < needed:
        raise RoundFailed(f"round {round_}: {len(silos)} ready silo(s), quorum needs {needed}")

    context.set_custom_status(_status(round_, "starting jobs", outcomes, needed=needed))
    started = yield context.task_all([
        context.call_activity("start_silo_job", {**job, "silo": s, "manifest": plan["manifest"]}) for s in silos])
    jobs = {}
    for s in started:
        if s.get("error"):
            outcomes[s["silo"]] = {"state": "failed", "reason": s["error"]}
        else:
            jobs[s["silo"]] = s["job_id"]

    # Wait for each silo's update or failure, all racing one deadline timer.
    waits = {}
    for silo in jobs:
        waits[context.wait_for_external_event(update_event(silo))] = (silo, "update")
        waits[context.wait_for_external_event(failed_event(silo))] = (silo, "failed")
    timer = context.create_timer(deadline)
    updates = {}
    while waits:
        context.set_custom_status(_status(round_, "collecting", outcomes, needed=needed, jobs=jobs,
                                          deadline=deadline.isoformat()))
        winner = yield context.task_any([*waits, timer])
        if winner is timer:
            break
        silo, kind = waits.pop(winner)
        for task in [t for t, (s, _) in waits.items() if s == silo]:
            del waits[task]
        if kind == "update":
            updates[silo] = winner.result
            outcomes[silo] = {"state": "received", "reason": None}
        else:
            outcomes[silo] = {"state": "failed", "reason": (winner.result or {}).get("reason", "job failed")}
    if not timer.is_completed:
        timer.cancel()
    for silo, o in outcomes.items():
        if o["state"] == "waiting":
            outcomes[silo] = {"state": "failed", "reason": f"no update before the deadline {deadline.isoformat()}"}

    if len(updates) < needed:
        context.set_custom_status(_status(round_, "failed", outcomes, needed=needed))
        raise RoundFailed(f"round {round_}: {len(updates)} update(s) of {len(silos)} silo(s), quorum needs "
                          f"{needed}; failed: " + "; ".join(f"{s}: {o['reason']}" for s, o in outcomes.items()
                                                           if o["state"] == "failed"))

    context.set_custom_status(_status(round_, "aggregating", outcomes, needed=needed))
    agg = yield context.call_activity_with_retry("aggregate", ACTIVITY_RETRY, {
        **job, "manifest": plan["manifest"],
        "updates": [{"silo": s, **u} for s, u in sorted(updates.items())]})
    for r in agg["rejected"]:
        outcomes[r["silo"]] = {"state": "rejected", "reason": r["reason"]}
    if len(agg["accepted"]) < needed:
        context.set_custom_status(_status(round_, "failed", outcomes, needed=needed))
        raise RoundFailed(f"round {round_}: {len(agg['accepted'])} valid update(s), quorum needs {needed}; rejected: "
                          + "; ".join(f"{r['silo']}: {r['reason']}" for r in agg["rejected"]))

    metrics = yield context.call_activity_with_retry("evaluate", ACTIVITY_RETRY, {
        "task": spec.task, "model": agg["model"]})
    result = {
        "round": round_, "model": agg["model"], "metrics": metrics, "num_samples": agg["num_samples"],
        "silos": {s: {**o, **({"num_samples": agg["samples"][s]} if s in agg["samples"] else {})}
                  for s, o in outcomes.items()},
    }
    context.set_custom_status(_status(round_, "done", outcomes, needed=needed, metrics=metrics))
    return result
