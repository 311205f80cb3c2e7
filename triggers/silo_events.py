"""Event Grid: a silo's update, evaluation or failure note landed in its outbox → raise the round's event.

An event is a hint: it is raised only if the blob it names is in that silo's outbox with the event's
eTag and size, so a forged or early event cannot count for (or knock out) a silo. Event Grid delivers
at least once and in any order, so this is written to be harmless on repeats: a duplicate
``update:{silo}`` is buffered and never read by the round (it waits once per silo), and an event for a
finished round meets a completed instance and is dropped. A storage error while checking raises, so
Event Grid delivers the event again. A training job's evaluation is not raised at all: its round waits
for the update published right after it (the round's manifest says who trains).
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
from fedfunc.coordinator import rounds
from fedfunc.coordinator.services import OutboxBlob, services
from fedfunc.protocol import (FailureNotice, UpdateNotice, evaluated_event, failed_event, round_instance_id,
                              update_event)
from fedfunc.registry import SiloRecord, UnknownSilo

bp = df.Blueprint()
log = logging.getLogger("fedfunc.events")
BLOB_PREFIX = "/blobServices/default/containers/"
MAX_FAILURE_NOTE = 64 * 1024
MAX_REASON = 2000  # characters of a silo's reason kept in the round's status and the audit trail


def blob_of(subject: str) -> tuple[str, str] | None:
    """``/blobServices/default/containers/{c}/blobs/{path}`` → (container, path)."""
    if not subject.startswith(BLOB_PREFIX) or "/blobs/" not in subject:
        return None
    container, _, path = subject[len(BLOB_PREFIX):].partition("/blobs/")
    return container, path


def account_of(topic: str) -> str:
    return topic.rstrip("/").rsplit("/", 1)[-1]


def route_outbox_event(event: func.EventGridEvent, delivered: datetime | None = None) -> tuple[str, str, dict] | None:
    """(round instance, event name, payload) for an update, evaluation or failure note from a registered
    silo's own outbox that is really there; None (with the reason logged) for anything else. ``delivered``:
    when the event arrived, for the round's timeline (with the event's own time, when the update landed)."""
    blob = blob_of(event.subject or "")
    parsed = layout.parse_outbox_blob(blob[1]) if blob and blob[0] == layout.OUTBOX else None
    if event.event_type != SystemEventNames.StorageBlobCreatedEventName or not parsed:
        log.info("ignored event %r (%r %r): not an outbox artifact", event.id, event.event_type, event.subject)
        return None
    if parsed["name"] not in (layout.UPDATE, layout.EVALUATION, layout.FAILED):
        return None
    silo = parsed["silo"]
    if parsed["name"] == layout.EVALUATION and (rounds.round_modes(services().store, parsed["run"], parsed["round"])
                                               or {}).get(silo) == "train":
        return None  # a training job's evaluation: its round waits for the update published right after it
    try:
        record = services().registry.get(silo)
    except UnknownSilo:
        log.warning("ignored event %r: %r names unknown silo %r", event.id, event.subject, silo)
        return None
    account = account_of(event.topic or "")
    if account != record.account:
        log.warning("ignored event %r: from storage account %r, but silo %r's outbox is in %r",
                    event.id, account, silo, record.account)
        return None
    landed = _landed(event, record, blob[1])
    if landed is None:
        return None
    instance = round_instance_id(parsed["run"], parsed["round"])
    if parsed["name"] in (layout.UPDATE, layout.EVALUATION):
        name = update_event(silo) if parsed["name"] == layout.UPDATE else evaluated_event(silo)
        return instance, name, UpdateNotice(path=blob[1], etag=landed.etag, size=landed.size,
                                            landed=event.event_time, delivered=delivered).wire()
    note = _failure_note(silo, blob[1])
    services().audit.record("job_refused" if note.get("rule") else "job_failed", run=parsed["run"],
                            round=parsed["round"], silo=silo, event_id=f"failed:{parsed['run']}:{parsed['round']}:{silo}",
                            rule=note.get("rule"), reason=note["reason"])
    return instance, failed_event(silo), FailureNotice(reason=note["reason"], rule=note.get("rule")).wire()


def _landed(event: func.EventGridEvent, record: SiloRecord, path: str) -> OutboxBlob | None:
    """The blob an event names, if it is in the silo's outbox with the event's eTag and size.

    An event is a hint, never proof (Event Grid's webhook is reachable, and a BlobCreated may be forged or
    replayed): a round counts a silo's update or failure only once the blob is really there. A missing
    blob leaves the silo waiting; its real blob, when it lands, brings its own event."""
    data = event.get_json()
    data = data if isinstance(data, dict) else {}
    found = services().outbox_blob(record, path)  # a storage error raises: Event Grid delivers again
    if found is None:
        log.warning("ignored event %r: %r is not in silo %r's outbox (forged, or sent ahead of its blob); "
                    "the silo keeps waiting", event.id, path, record.name)
        return None
    etag, size = data.get("eTag"), data.get("contentLength")
    if (etag is not None and str(etag).strip('"') != found.etag) or (size is not None and size != found.size):
        log.warning("ignored event %r: it says eTag %r and %r bytes, but silo %r's outbox holds %r with eTag %r "
                    "and %d bytes", event.id, etag, size, record.name, path, found.etag, found.size)
        return None
    return found


def _failure_note(silo: str, path: str) -> dict:
    """The silo's own failure note (bounded read). It is there (``_landed``), so it ends the silo's wait even
    when it cannot be parsed; a storage error raises, so the event is delivered again."""
    try:
        note = json.loads(services().outbox_reader()(silo, path, MAX_FAILURE_NOTE))  # over the bound: ValueError
        rule = note.get("rule")
        return {"reason": str(note.get("reason") or "job failed (no reason given)")[:MAX_REASON],
                "rule": str(rule)[:MAX_REASON] if rule else None}
    except (ValueError, AttributeError, RecursionError) as e:
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
