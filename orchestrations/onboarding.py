"""Onboarding a silo: validate → provision → grant access → smoke job → mark ready.

Each step is an idempotent ensure-activity, so onboarding the same silo twice is safe and a crash
mid-way resumes. If a step fails, the silo's registry entry is removed again (its storage is kept
and reused by the next attempt): no silo stays half-registered.
"""
from __future__ import annotations

import azure.durable_functions as df

from orchestrations.round import ACTIVITY_RETRY

bp = df.Blueprint()
STEPS = ("provision_silo", "grant_silo_access", "smoke_test_silo", "mark_silo_ready")


@bp.orchestration_trigger(context_name="context")
def onboard_silo(context: df.DurableOrchestrationContext):
    request = context.get_input()
    request = yield context.call_activity("validate_silo", request)
    request = {**request, "smoke_id": f"{context.instance_id}-{context.new_uuid()}"}
    done = []
    for step in STEPS:
        context.set_custom_status({"silo": request["name"], "step": step, "done": done})
        try:
            result = yield context.call_activity_with_retry(step, ACTIVITY_RETRY, request)
        except Exception as e:
            reason = str(e).split("$OutOfProcData$")[0].strip()
            yield context.call_activity("abandon_onboarding", request)
            context.set_custom_status({"silo": request["name"], "step": step, "done": done, "error": reason})
            raise RuntimeError(f"onboarding {request['name']} failed at {step}: {reason}") from None
        done.append({"step": step, "result": result})
    context.set_custom_status({"silo": request["name"], "step": "ready", "done": done})
    return {"silo": request["name"], "status": "ready", "steps": done}
