"""Event Grid: a silo's update (or failure note) landed in its outbox → raise the round's event.

Event Grid delivers at least once and in any order, so this is written to be harmless on repeats:
a duplicate ``update:{silo}`` is buffered and never read by the round (it waits once per silo), and
an event for a finished round meets a completed instance and is dropped.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func
from azure.eventgrid import SystemEventNames

from fedfunc import layout
from fedfunc.azure.events import job_failure
from fedfunc.coordinator.services import services
from fedfunc.protocol import FailureNotice, UpdateNotice, failed_event, round_instance_id, update_event
from fedfunc.registry import UnknownSilo

bp = df.Blueprint()
log = logging.getLogger("fedfunc.events")
BLOB_PREFIX = "/blobServices/default/containers/"
MAX_FAILURE_NOTE = 64 * 1024


def blob_of(subject: str) -> tuple[str, str] | None:
    """``/blobServices/default/containers/{c}/blobs/{path}`` → (container, path)."""
    if not subject.startswith(BLOB_PREFIX) or "/blobs/" not in subject:
        return None
    container, _, path = subject[len(BLOB_PREFIX):].partition("/blobs/")
    return container, path


def account_of(topic: str) -> str:
    return topic.rstrip("/").rsplit("/", 1)[-1]


def route_outbox_event(event: func.EventGridEvent, delivered: datetime | None = None) -> tuple[str, str, dict] | None:
    """(round instance, event name, payload) for an update or failure note from a registered silo's
    own outbox; None (with the reason logged) for anything else. ``delivered``: when the event arrived,
    for the round's timeline (with the event's own time, when the update landed)."""
    blob = blob_of(event.subject or "")
    parsed = layout.parse_outbox_blob(blob[1]) if blob and blob[0] == layout.OUTBOX else None
    if event.event_type != SystemEventNames.StorageBlobCreatedEventName or not parsed:
        log.info("ignored event %s (%s %s): not an outbox artifact", event.id, event.event_type, event.subject)
        return None
    if parsed["name"] not in (layout.UPDATE, layout.FAILED):
        return None
    silo = parsed["silo"]
    try:
        record = services().registry.get(silo)
    except UnknownSilo:
        log.warning("ignored event %s: %s names unknown silo %r", event.id, event.subject, silo)
        return None
    account = account_of(event.topic or "")
    if account != record.account:
        log.warning("ignored event %s: from storage account %r, but silo %r's outbox is in %r",
                    event.id, account, silo, record.account)
        return None
    instance = round_instance_id(parsed["run"], parsed["round"])
    data = event.get_json() or {}
    if parsed["name"] == layout.UPDATE:
        return instance, update_event(silo), UpdateNotice(path=blob[1], etag=data.get("eTag"),
                                                          size=data.get("contentLength"), landed=event.event_time,
                                                          delivered=delivered).wire()
    note = _failure_note(silo, blob[1])
    services().audit.record("job_refused" if note.get("rule") else "job_failed", run=parsed["run"],
                            round=parsed["round"], silo=silo, event_id=f"failed:{parsed['run']}:{parsed['round']}:{silo}",
                            rule=note.get("rule"), reason=note["reason"])
    return instance, failed_event(silo), FailureNotice(reason=note["reason"], rule=note.get("rule")).wire()


def _failure_note(silo: str, path: str) -> dict:
    """The silo's own failure note (bounded read); the event still counts if the note is unreadable."""
    try:
        note = json.loads(services().outbox_reader()(silo, path, MAX_FAILURE_NOTE))
        rule = note.get("rule")
        return {"reason": str(note.get("reason") or "job failed (no reason given)"), "rule": str(rule) if rule else None}
    except Exception as e:  # the failure still ends the silo's wait
        return {"reason": f"job failed (failure note unreadable: {type(e).__name__})", "rule": None}


async def raise_to_round(client: df.DurableOrchestrationClient, instance: str, name: str, payload: dict) -> None:
    try:
        await client.raise_event(instance, name, payload)
        log.info("raised %s on %s", name, instance)
    except Exception as e:  # finished or unknown round: a late or duplicate delivery, harmless
        log.info("dropped %s for %s: %s", name, instance, e)


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_update(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    routed = route_outbox_event(event, delivered=datetime.now(timezone.utc))
    if routed:
        await raise_to_round(client, *routed)


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_job_status(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """AML ``RunStatusChanged``: a failed or canceled silo job ends that silo's wait at once."""
    routed = job_failure(event.event_type, event.get_json() or {})
    if routed:
        await raise_to_round(client, *routed)
