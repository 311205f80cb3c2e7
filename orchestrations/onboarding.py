"""Onboarding a silo: validate → provision → grant access → smoke job → mark ready → ``SiloOnboarded``.

Each step is an idempotent ensure-activity, so onboarding the same silo twice is safe and a crash
mid-way resumes. If a step fails, the silo's registry entry is removed again (its storage is kept
and reused by the next attempt): no silo stays half-registered.
"""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc import protocol as p
from orchestrations.failures import ACTIVITY_RETRY, failure_reason
from orchestrations.observing import observe

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def onboard_silo(context: df.DurableOrchestrationContext):
    request = yield context.call_activity(p.VALIDATE_SILO, context.get_input())
    request = {**request, "smoke_id": f"{context.instance_id}-{context.new_uuid()}"}
    done = []
    for step in p.ONBOARDING_STEPS:
        context.set_custom_status({"silo": request["name"], "step": step, "done": done})
        try:
            result = yield context.call_activity_with_retry(step, ACTIVITY_RETRY, request)
        except Exception as e:
            reason = failure_reason(e)
            yield context.call_activity(p.ABANDON_ONBOARDING, request)
            context.set_custom_status({"silo": request["name"], "step": step, "done": done, "error": reason})
            raise RuntimeError(f"onboarding {request['name']} failed at {step}: {reason}") from None
        done.append({"step": step, "result": result})
    yield observe(context, p.SiloFact(kind="SiloOnboarded", silo=request["name"], at=context.current_utc_datetime,
                                      occurrence=str(context.new_uuid()), compute=request.get("compute")))
    context.set_custom_status({"silo": request["name"], "step": "ready", "done": done})
    return {"silo": request["name"], "status": "ready", "steps": done}
