"""The audit trail, in two append-only logs, each written only by the party whose actions it records.

- The orchestrator's log: table ``audit`` in the orchestrator's account, written with ``create_entity``
  only (never upsert/update/delete). Silos hold no credential for that account, so no silo can forge
  or erase an orchestrator entry. Entries: tickets issued, jobs submitted / refused, artifacts received
  (with the sha256 the orchestrator computed), onboarding steps.
- Each silo's log: ``audit/YYYY-MM-DD.jsonl`` append blobs in the silo's own ``outbox``, written by
  the silo runner with the silo's key: jobs started or refused (with the rule) and every artifact that
  left (with its sha256). The orchestrator can read it (outbox read SAS / RBAC) but not write it, so it
  cannot forge what a silo did; cross-checking the two logs' hashes shows any disagreement.

On Azure, Table storage has no immutability policy: the guarantee is that no code path here updates or
deletes an entry and that only the orchestrator identity has data access to the table.
"""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Literal

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableTransactionError
from pydantic import BaseModel

TABLE = "audit"
SILO_LOG_DIR = "audit"
Kind = Literal["ticket_issued", "job_submitted", "job_started", "job_refused", "job_failed", "artifact_egress",
               "artifact_received", "update_rejected", "evaluation_rejected", "bundle_uploaded", "silo_onboarded",
               "silo_disabled", "silo_removed"]
_NO_RUN = "-"
TRANSACTION_MAX = 100  # operations in one entity-group transaction (Table storage's limit)
TRANSACTION_MIN = 3    # fewer entries are written side by side: Azurite takes longer for a batch of 2 than for 2 creates
WRITERS = 8  # entries written at once when not in a transaction


def _now() -> datetime:
    return datetime.now(timezone.utc)


class AuditEvent(BaseModel):
    at: datetime
    kind: Kind
    source: str  # "orchestrator" or "silo:<name>"
    run: str | None = None
    round: int | None = None
    silo: str | None = None
    detail: dict = {}


class AuditLog:
    """The orchestrator's append-only log in its ``audit`` table."""

    def __init__(self, table: TableClient):
        self.table = table

    @classmethod
    def create(cls, table_service) -> "AuditLog":
        return cls(table_service.create_table_if_not_exists(TABLE))

    def record(self, kind: Kind, *, run: str | None = None, round: int | None = None, silo: str | None = None,
               event_id: str | None = None, **detail) -> AuditEvent:
        """Append one entry. With ``event_id`` a retried activity appends it once (the first entry stays)."""
        return self.record_many([entry(kind, run=run, round=round, silo=silo, event_id=event_id, **detail)])[0]

    def record_many(self, entries: list[tuple[AuditEvent, str]]) -> list[AuditEvent]:
        """Append entries (``entry(...)``): one entity-group transaction per run's entries (up to 100; fewer
        than ``TRANSACTION_MIN`` side by side), so a round's entries are one round trip. A transaction
        refused because an entry is already there (a retried activity; a transaction is all or nothing) is
        redone entry by entry, keeping that entry as it was."""
        groups: dict[str, list[dict]] = {}
        for event, row in entries:
            entity = _entity(event, row)
            groups.setdefault(entity["PartitionKey"], []).append(entity)
        for group in groups.values():
            for i in range(0, len(group), TRANSACTION_MAX):
                self._create(group[i:i + TRANSACTION_MAX])
        return [event for event, _ in entries]

    def _create(self, entities: list[dict]) -> None:
        if len(entities) >= TRANSACTION_MIN:
            try:
                self.table.submit_transaction([("create", entity) for entity in entities])
                return
            except TableTransactionError:
                pass

        def create(entity: dict) -> None:
            try:
                self.table.create_entity(entity)
            except ResourceExistsError:
                pass
        if len(entities) == 1:
            create(entities[0])
        else:
            with ThreadPoolExecutor(min(WRITERS, len(entities)), thread_name_prefix="audit") as pool:
                list(pool.map(create, entities))

    def query(self, *, run: str | None = None, silo: str | None = None, kind: str | None = None,
              since: datetime | None = None) -> list[AuditEvent]:
        clauses, params = [], {}
        for name, field, value in (("p", "PartitionKey", run), ("s", "silo", silo), ("k", "kind", kind)):
            if value is not None:
                clauses.append(f"{field} eq @{name}")
                params[name] = value
        if since is not None:
            clauses.append("at ge @t")
            params["t"] = since
        rows = (self.table.query_entities(" and ".join(clauses), parameters=params) if clauses
                else self.table.list_entities())
        return sorted((_from_entity(r) for r in rows), key=lambda e: e.at)


def entry(kind: Kind, *, run: str | None = None, round: int | None = None, silo: str | None = None,
          event_id: str | None = None, **detail) -> tuple[AuditEvent, str]:
    """One orchestrator entry and its row key (``event_id``, else a new time-ordered id)."""
    event = AuditEvent(at=_now(), kind=kind, source="orchestrator", run=run, round=round, silo=silo, detail=detail)
    return event, event_id or f"{event.at:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}"


def _entity(event: AuditEvent, row: str) -> dict:
    return {"PartitionKey": event.run or _NO_RUN, "RowKey": row, "at": event.at, "kind": event.kind,
            "source": event.source, "silo": event.silo or "", "round": -1 if event.round is None else event.round,
            "detail": json.dumps(event.detail, sort_keys=True)}


def _from_entity(row) -> AuditEvent:
    return AuditEvent(at=row["at"], kind=row["kind"], source=row["source"],
                      run=None if row["PartitionKey"] == _NO_RUN else row["PartitionKey"],
                      round=None if row["round"] < 0 else row["round"], silo=row["silo"] or None,
                      detail=json.loads(row["detail"]))


class SiloAuditTrail:
    """A silo's own log, day files of JSON lines in its outbox (anything with ``append_line``/``read``)."""

    def __init__(self, outbox, silo: str):
        self.outbox, self.silo = outbox, silo

    @staticmethod
    def path(day: datetime) -> str:
        return f"{SILO_LOG_DIR}/{day:%Y-%m-%d}.jsonl"

    def append(self, kind: Kind, *, run: str, round: int, job: str, **detail) -> dict:
        at = _now()
        line = {"at": at.isoformat(), "kind": kind, "source": f"silo:{self.silo}", "silo": self.silo,
                "run": run, "round": round, "job": job, "detail": detail}
        self.outbox.append_line(self.path(at), json.dumps(line, sort_keys=True))
        return line

    def recent(self, now: datetime | None = None, days: int = 2) -> list[dict]:
        """Entries of the last ``days`` day files (enough for a 24 h window)."""
        now = now or _now()
        lines = []
        for back in range(days - 1, -1, -1):
            raw = self.outbox.read(self.path(now - timedelta(days=back)))
            lines += [json.loads(line) for line in (raw or b"").decode().splitlines() if line.strip()]
        return lines


def silo_events(record, since: datetime | None = None) -> list[AuditEvent]:
    """A silo's own log, read from its outbox with the orchestrator's read access (SAS locally, identity on Azure)."""
    from azure.storage.blob import ContainerClient

    from fedfunc.storage import credential

    outbox = ContainerClient(record.blob_url, "outbox", credential=record.outbox_read_sas or credential())
    first_day = f"{SILO_LOG_DIR}/{since:%Y-%m-%d}" if since else ""
    events = []
    for blob in outbox.list_blobs(name_starts_with=f"{SILO_LOG_DIR}/"):
        if blob.name < first_day:
            continue
        for line in outbox.download_blob(blob.name).readall().decode().splitlines():
            if line.strip():
                e = json.loads(line)
                event = AuditEvent.model_validate({k: e.get(k) for k in AuditEvent.model_fields})
                if since is None or event.at >= since:
                    events.append(event)
    return events
