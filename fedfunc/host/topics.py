"""Local Event Grid custom topics: what `EventGridPublisherClient` posts, checked as Event Grid does.

The publisher sends `POST {endpoint}?api-version=2018-01-01` with `aeg-sas-key` (or `aeg-sas-token`),
a JSON array of CloudEvents 1.0 (`application/cloudevents-batch+json; charset=utf-8`) or of Event Grid
schema events (`application/json`). A topic's endpoint here is `{host}/eventgrid/topics/{name}/api/events`.
"""
from __future__ import annotations

import json
import re

from fedfunc.host import events as ev

TOPICS = "/admin/eventgrid/topics"
MAX_BATCH_BYTES = 1024 * 1024  # Event Grid's limit for one publish request
RESOURCE = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.EventGrid/topics/{}"
_CLOUD_REQUIRED = ("id", "source", "type", "specversion")
_GRID_REQUIRED = ("id", "subject", "eventType", "eventTime", "dataVersion")


def check_topic_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]{3,50}", name):
        raise ValueError(f"topic name {name!r}: use 3-50 letters, digits or '-'")
    return name


def topic_endpoint(origin: str, topic: str) -> str:
    return f"{origin}/eventgrid/topics/{topic}/api/events"


def topic_resource(topic: str) -> str:
    return RESOURCE.format(topic)


def event_kind(event: dict) -> tuple[str, str]:
    """(event type, subject) of a CloudEvent or an Event Grid schema event."""
    if "specversion" in event:
        return event["type"], event.get("subject") or ""
    return event["eventType"], event["subject"]


def parse_published(topic: str, content_type: str, body: bytes) -> list[dict]:
    """The events of one publish request, each checked; a ValueError names the event and field."""
    if len(body) > MAX_BATCH_BYTES:
        raise ValueError(f"request too large: {len(body)} bytes (at most {MAX_BATCH_BYTES})")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from exc
    media = content_type.split(";")[0].strip().lower()
    if media == "application/cloudevents+json" and isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("request body must be a non-empty JSON array of events")
    cloud = media in ("application/cloudevents-batch+json", "application/cloudevents+json")
    return [_checked(topic, i, e, cloud) for i, e in enumerate(value)]


def _checked(topic: str, index: int, event, cloud: bool) -> dict:
    if not isinstance(event, dict):
        raise ValueError(f"event {index} is not a JSON object")
    required = _CLOUD_REQUIRED if cloud else _GRID_REQUIRED
    for name in required:
        if not isinstance(event.get(name), str) or not event[name]:
            raise ValueError(f"event {index}: required field '{name}' is missing or not a string "
                             f"({'CloudEvents 1.0' if cloud else 'Event Grid'} schema)")
    if cloud:
        if event["specversion"] != "1.0":
            raise ValueError(f"event {index}: field 'specversion' must be '1.0'")
        return {**event, "time": event.get("time") or ev.iso(ev.utcnow())}
    if "data" not in event:
        raise ValueError(f"event {index}: required field 'data' is missing (Event Grid schema)")
    return {**event, "topic": topic_resource(topic), "metadataVersion": "1"}
