"""Manage local Event Grid subscriptions and topics from app code (e.g. a silo onboarding activity).

Inside `fedfunc host` the calls go straight to the running host; from another process they
go to its HTTP API at `FEDFUNC_HOST_URL` (the host sets it in its own environment) with the
master key `FEDFUNC_HOST_MASTER_KEY`. On Azure, create real Event Grid subscriptions instead.
"""
from __future__ import annotations

import os

import requests

from fedfunc.host.eventgrid import BLOB_CREATED, WEBHOOK, EventGrid
from fedfunc.host.topics import TOPICS, check_topic_name, topic_endpoint

ACTIVE: EventGrid | None = None  # the running in-process host's Event Grid, if any


def _http(method: str, path: str, body: dict | None = None) -> dict | list:
    base = os.environ.get("FEDFUNC_HOST_URL")
    if not base:
        raise RuntimeError("no fedfunc host in this process and FEDFUNC_HOST_URL is not set")
    key = os.environ.get("FEDFUNC_HOST_MASTER_KEY")
    if not key:
        raise RuntimeError("calling the fedfunc host's subscription routes needs its master key in FEDFUNC_HOST_MASTER_KEY")
    url = f"{base.rstrip('/')}{path}"
    response = requests.request(method, url, json=body, headers={"x-functions-key": key}, timeout=30)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
    return response.json()


def _put(name: str, body: dict) -> dict:
    if ACTIVE is not None:
        sub = ACTIVE.parse(name, body)
        ACTIVE.put(sub)
        return sub.redacted()
    return _http("PUT", f"{WEBHOOK}/subscriptions/{name}", body)


def put_subscription(name: str, function: str, connection: str, container: str,
                     subject_begins_with: str | None = None, subject_ends_with: str | None = None,
                     included_event_types: list[str] | None = None) -> dict:
    """Create or replace subscription `name`: BlobCreated events for blobs written to `container`
    (in the account `connection` reaches: a connection string or an account URL with a SAS
    token) after it exists, delivered to the Event Grid-triggered `function`."""
    return _put(name, {"function": function, "connection": connection, "container": container,
                       "subject_begins_with": subject_begins_with, "subject_ends_with": subject_ends_with,
                       "included_event_types": included_event_types or [BLOB_CREATED]})


def put_topic_subscription(name: str, topic: str, *, function: str | None = None, webhook: str | None = None,
                           included_event_types: list[str] | None = None, subject_begins_with: str | None = None,
                           subject_ends_with: str | None = None) -> dict:
    """Create or replace subscription `name` to local custom topic `topic`: events posted to it from now
    on (of `included_event_types`, all when omitted) go to the Event Grid-triggered `function` or are
    POSTed to `webhook`, at least once."""
    body = {"topic": topic, "function": function, "webhook": webhook, "included_event_types": included_event_types,
            "subject_begins_with": subject_begins_with, "subject_ends_with": subject_ends_with}
    return _put(name, {k: v for k, v in body.items() if v is not None})


def topic(name: str) -> dict:
    """Local custom topic `name` ({name, endpoint, key}), created with a new key if it does not exist."""
    if ACTIVE is not None:
        key = ACTIVE.keys.topic_key(check_topic_name(name))
        return {"name": name, "endpoint": topic_endpoint(ACTIVE.origin, name), "key": key}
    return _http("PUT", f"{TOPICS}/{name}")


def delete_subscription(name: str) -> bool:
    if ACTIVE is not None:
        return ACTIVE.delete(name)
    try:
        return bool(_http("DELETE", f"{WEBHOOK}/subscriptions/{name}")["deleted"])
    except RuntimeError as exc:
        if ": 404 " in str(exc):
            return False
        raise


def list_subscriptions() -> list[dict]:
    if ACTIVE is not None:
        return [s.redacted() for s, _ in ACTIVE.all()]
    return _http("GET", f"{WEBHOOK}/subscriptions")
