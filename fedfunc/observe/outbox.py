"""The observation outbox: what is owed to each sink, kept in the orchestrator's ``observations`` table
until it is delivered.

One entity per (sink, key): ``add`` creates it once, so a fact recorded again (a replay, a retried
activity, a second drain) is never owed twice. A drain ``claim``s an entity with an ETag-conditional
lease, so two drains never deliver the same entity at once; it then marks it ``done``, ``retry_later``
(attempts, back-off, the error) or ``reject`` (the sink's reason; kept, not retried).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError
from azure.data.tables import TableClient, UpdateMode

TABLE = "observations"
Sink = Literal["events", "tracking"]
State = Literal["pending", "done", "rejected"]
CHUNK = 30_000                       # a Table string property holds 32K UTF-16 characters
MAX_BACKOFF = timedelta(seconds=60)  # an unreachable sink is tried again at least every minute
LEASE = timedelta(seconds=120)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Entry:
    sink: Sink
    key: str
    at: datetime
    payload: dict
    attempts: int
    etag: str
    ready: bool = True    # its retry time has come and no other drain holds it


def _chunks(text: str) -> dict[str, str]:
    return {f"payload{i}": text[j:j + CHUNK] for i, j in enumerate(range(0, len(text), CHUNK))}


def _payload(entity) -> dict:
    parts = sorted((int(k.removeprefix("payload")), v) for k, v in entity.items() if k.startswith("payload"))
    return json.loads("".join(v for _, v in parts))


def backoff(attempts: int) -> timedelta:
    return min(MAX_BACKOFF, timedelta(seconds=2 ** max(0, attempts - 1)))


class ObservationOutbox:
    def __init__(self, table: TableClient):
        self.table = table

    @classmethod
    def create(cls, table_service) -> "ObservationOutbox":
        return cls(table_service.create_table_if_not_exists(TABLE))

    def add(self, sink: Sink, key: str, at: datetime, payload: dict) -> bool:
        """Owe ``payload`` to ``sink`` under ``key``, once: False if that key was recorded before (in any state)."""
        entity = {"PartitionKey": sink, "RowKey": key, "state": "pending", "at": at, "attempts": 0,
                  "next_at": _now(), "lease_until": _now(), **_chunks(json.dumps(payload, sort_keys=True))}
        try:
            self.table.create_entity(entity)
            return True
        except ResourceExistsError:
            return False

    def pending(self, sink: Sink, now: datetime | None = None) -> list[Entry]:
        """Every pending entry, oldest fact first; ``ready`` when its retry time has come and its lease
        (if another drain took one) has run out."""
        now = now or _now()
        rows = self.table.query_entities("PartitionKey eq @s and state eq 'pending'", parameters={"s": sink})
        return [Entry(sink, r["RowKey"], r["at"], _payload(r), r["attempts"], r.metadata["etag"],
                      ready=r["next_at"] <= now and r["lease_until"] <= now)
                for r in sorted(rows, key=lambda r: (r["at"], r["RowKey"]))]

    def claim(self, entry: Entry, now: datetime | None = None) -> Entry | None:
        """Lease ``entry`` for this drain; None if another drain changed it since it was read."""
        try:
            meta = self.table.update_entity(
                {"PartitionKey": entry.sink, "RowKey": entry.key, "lease_until": (now or _now()) + LEASE},
                mode=UpdateMode.MERGE, etag=entry.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, HttpResponseError) as e:
            if getattr(e, "status_code", 412) == 412:
                return None
            raise
        return Entry(entry.sink, entry.key, entry.at, entry.payload, entry.attempts, meta["etag"], True)

    def _set(self, entry: Entry, **fields) -> None:
        self.table.update_entity({"PartitionKey": entry.sink, "RowKey": entry.key, **fields}, mode=UpdateMode.MERGE)

    def done(self, entry: Entry) -> None:
        self._set(entry, state="done", attempts=entry.attempts + 1, delivered_at=_now(), last_error="")

    def retry_later(self, entry: Entry, error: str, now: datetime | None = None) -> datetime:
        now = now or _now()
        attempts = entry.attempts + 1
        next_at = now + backoff(attempts)
        self._set(entry, attempts=attempts, next_at=next_at, lease_until=now, last_error=error[:2000])
        return next_at

    def reject(self, entry: Entry, reason: str) -> None:
        self._set(entry, state="rejected", attempts=entry.attempts + 1, last_error=reason[:2000])

    def states(self, sink: Sink) -> dict[str, State]:
        """Every key of ``sink`` and its state (for tests, benches and the operator)."""
        return {r["RowKey"]: r["state"] for r in self.table.query_entities(
            "PartitionKey eq @s", parameters={"s": sink}, select=["RowKey", "state"])}
