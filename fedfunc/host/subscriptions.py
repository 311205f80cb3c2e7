"""Manage local Event Grid subscriptions from app code (e.g. a silo onboarding activity).

Inside `fedfunc host` the calls go straight to the running host; from another process they
go to its HTTP API at `FEDFUNC_HOST_URL` (the host sets it in its own environment), with
`FEDFUNC_HOST_MASTER_KEY` when set. On Azure, create real Event Grid subscriptions instead.
"""
from __future__ import annotations

import os

import requests

from fedfunc.host.eventgrid import BLOB_CREATED, WEBHOOK, EventGrid, parse_subscription

ACTIVE: EventGrid | None = None  # the running in-process host's Event Grid, if any


def _http(method: str, name: str = "", body: dict | None = None) -> dict | list:
    base = os.environ.get("FEDFUNC_HOST_URL")
    if not base:
        raise RuntimeError("no fedfunc host in this process and FEDFUNC_HOST_URL is not set")
    headers = {"x-functions-key": os.environ["FEDFUNC_HOST_MASTER_KEY"]} if os.environ.get("FEDFUNC_HOST_MASTER_KEY") else {}
    url = f"{base.rstrip('/')}{WEBHOOK}/subscriptions" + (f"/{name}" if name else "")
    response = requests.request(method, url, json=body, headers=headers, timeout=30)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
    return response.json()


def put_subscription(name: str, function: str, connection: str, container: str,
                     subject_begins_with: str | None = None, subject_ends_with: str | None = None,
                     included_event_types: list[str] | None = None) -> dict:
    """Create or replace subscription `name`: BlobCreated events for blobs written to `container`
    (in the account `connection` reaches: a connection string or an account URL with a SAS
    token) after it exists, delivered to the Event Grid-triggered `function`."""
    body = {"function": function, "connection": connection, "container": container,
            "subject_begins_with": subject_begins_with, "subject_ends_with": subject_ends_with,
            "included_event_types": included_event_types or [BLOB_CREATED]}
    if ACTIVE is not None:
        sub = parse_subscription(name, body, ACTIVE.app)
        ACTIVE.put(sub)
        return sub.redacted()
    return _http("PUT", name, body)


def delete_subscription(name: str) -> bool:
    if ACTIVE is not None:
        return ACTIVE.delete(name)
    try:
        return bool(_http("DELETE", name)["deleted"])
    except RuntimeError as exc:
        if ": 404 " in str(exc):
            return False
        raise


def list_subscriptions() -> list[dict]:
    if ACTIVE is not None:
        return [s.redacted() for s, _ in ACTIVE.all()]
    return _http("GET")
