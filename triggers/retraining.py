"""Retraining triggers: new data in a silo (Event Grid BlobCreated on its ``data`` container) and a schedule.

Both need ``FEDFUNC_RETRAIN_SPEC`` (the run spec to retrain with); without it they log and do nothing.
The timer is off unless ``AzureWebJobs.scheduled_retraining.Disabled`` is set to false.
"""
from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func
from azure.eventgrid import SystemEventNames

from fedfunc import layout
from fedfunc import protocol as p
from fedfunc.coordinator.services import services
from orchestrations.retraining import DEBOUNCER, UPLOAD_EVENT
from triggers.runs_api import BadRequest, start_training, validate_run_request
from triggers.silo_events import account_of, blob_of

bp = df.Blueprint()
log = logging.getLogger("fedfunc.retraining")


def retrain_spec() -> dict | None:
    """The validated retraining spec (JSON), or None when retraining is off or the setting is invalid."""
    spec = services().settings.retrain_spec
    if spec is None:
        log.info("retraining is off: FEDFUNC_RETRAIN_SPEC is not set")
        return None
    try:
        _, checked = validate_run_request(dict(spec))
    except BadRequest as e:
        log.error("retraining skipped: FEDFUNC_RETRAIN_SPEC is invalid: %s", e)
        return None
    return checked.model_dump(mode="json")


def upload_of(event: func.EventGridEvent) -> dict | None:
    """The silo and blob of a BlobCreated in a registered silo's own ``data`` container, else None."""
    blob = blob_of(event.subject or "")
    if event.event_type != SystemEventNames.StorageBlobCreatedEventName or not blob or blob[0] != layout.DATA:
        return None
    account = account_of(event.topic or "")
    silos = [r.name for r in services().registry.list() if r.account == account]
    if not silos:
        log.warning("ignored data upload %s: storage account %r belongs to no registered silo", event.subject, account)
        return None
    return {"silo": silos[0], "path": blob[1]}


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_data_uploaded(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    upload = upload_of(event)
    spec = retrain_spec() if upload else None
    if spec is None:
        return
    status = await client.get_status(DEBOUNCER)
    if not (status and status.runtime_status and status.runtime_status.value in ("Running", "Pending")):
        try:
            await client.start_new(p.RETRAINING, DEBOUNCER, {"spec": spec, "uploads": [],
                                                                   "quiet_s": services().settings.retrain_quiet_s})
        except Exception as e:  # another upload started it a moment ago
            log.info("retraining debouncer already starting: %s", e)
    await client.raise_event(DEBOUNCER, UPLOAD_EVENT, upload)
    log.info("data upload %s/%s → retraining debouncer", upload["silo"], upload["path"])


@bp.timer_trigger(arg_name="timer", schedule="%FEDFUNC_RETRAIN_SCHEDULE%", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def scheduled_retraining(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    spec = retrain_spec()
    if spec is None:
        return
    run_id, checked = validate_run_request(spec)
    await start_training(client, run_id, checked)
    log.info("scheduled retraining started run %s (past due: %s)", run_id, timer.past_due)
