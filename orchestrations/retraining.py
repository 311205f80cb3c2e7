"""Retraining: a burst of data uploads (or a schedule) starts one training run, not one per upload.

``retrain_debounce`` runs as the singleton instance ``retrain``: each upload raises ``upload`` on it,
and it waits until no upload has come for ``quiet_s`` seconds before starting the run. Uploads that
arrive while that run trains stay buffered in the instance; they start the next burst (``continue_as_new``),
so new data is never left untrained.
"""
from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from fedfunc import protocol as p

bp = df.Blueprint()
DEBOUNCER = "retrain"
UPLOAD_EVENT = "upload"


@bp.orchestration_trigger(context_name="context")
def retrain_debounce(context: df.DurableOrchestrationContext):
    job = context.get_input()
    uploads = list(job["uploads"])
    upload = context.wait_for_external_event(UPLOAD_EVENT)  # always one outstanding: it catches the next upload
    while True:
        context.set_custom_status({"phase": "waiting for quiet", "uploads": len(uploads)})
        quiet = context.create_timer(context.current_utc_datetime + timedelta(seconds=job["quiet_s"]))
        winner = yield context.task_any([upload, quiet])
        if winner is quiet:
            break
        quiet.cancel()
        uploads.append(upload.result)
        upload = context.wait_for_external_event(UPLOAD_EVENT)
    run_id = f"retrain-{context.current_utc_datetime:%Y%m%dT%H%M%S}"
    context.set_custom_status({"phase": "training", "run": run_id, "uploads": len(uploads)})
    result = yield context.call_sub_orchestrator(p.TRAINING, {"run_id": run_id, "spec": job["spec"]},
                                                 instance_id=run_id)
    # An upload during training has completed the outstanding wait; then it opens the next burst.
    now = context.create_timer(context.current_utc_datetime)
    if (yield context.task_any([upload, now])) is upload:
        context.continue_as_new({**job, "uploads": [upload.result]})
        return None
    return {"run": run_id, "uploads": len(uploads), "result": result}
