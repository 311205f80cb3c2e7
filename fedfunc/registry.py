"""The silo registry: one row per silo in the orchestrator's ``silos`` table.

It records where a silo lives and how the orchestrator may reach its outbox, never a silo's account
key: a silo's key stays with the silo (locally in its home folder, on Azure there is none).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Literal

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from pydantic import BaseModel, ConfigDict, Field

from fedfunc.validation import SILO_NAME, UnknownName

TABLE = "silos"
_PARTITION = "silo"
Status = Literal["onboarding", "ready", "disabled"]
_LIST_FIELDS = ("trusted_signers",)


class UnknownSilo(UnknownName):
    def __init__(self, name: str):
        super().__init__(name, f"unknown silo {name!r}: it is not in the silo registry")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SiloRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SILO_NAME, description="lowercase letters, digits, hyphens; 3-24 characters")
    account: str = Field(pattern=r"^[a-z0-9]{3,24}$", description="the silo's storage account")
    blob_url: str = Field(pattern=r"^https?://", description="the account's blob endpoint")
    compute: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", description="'local' or an AML compute name")
    status: Status = "onboarding"
    trusted_signers: list[str] = Field(default_factory=list, description="key ids the silo's policy trusts")
    policy_ref: str = Field(description="where the silo's own policy lives, e.g. <blob_url>/policy/policy.json")
    outbox_read_sas: str | None = Field(None, description="local only: orchestrator read+list SAS on the outbox")
    max_samples: int | None = Field(None, ge=1, description="the most samples the silo's updates may be weighted "
                                    "by: what the admin registered for its data (the orchestrator cannot count it)")
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    def to_entity(self) -> dict:
        data = self.model_dump(mode="json")
        for key in _LIST_FIELDS:
            data[key] = json.dumps(data[key])
        data = {k: v for k, v in data.items() if v is not None}  # the table service has no null
        return {"PartitionKey": _PARTITION, "RowKey": self.name, **data}

    @classmethod
    def from_entity(cls, entity) -> "SiloRecord":
        data = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        for key in _LIST_FIELDS:
            data[key] = json.loads(data.get(key) or "[]")
        return cls.model_validate(data)


class SiloRegistry:
    """CRUD over the ``silos`` table. Writes are idempotent upserts, so a retried activity is harmless."""

    def __init__(self, table: TableClient):
        self.table = table

    @classmethod
    def create(cls, table_service) -> "SiloRegistry":
        """The registry on a ``TableServiceClient`` (e.g. ``fedfunc.storage.table_service``), creating the table."""
        return cls(table_service.create_table_if_not_exists(TABLE))

    def get(self, name: str) -> SiloRecord:
        try:
            return SiloRecord.from_entity(self.table.get_entity(_PARTITION, name))
        except ResourceNotFoundError:
            raise UnknownSilo(name) from None

    def list(self, status: Status | None = None) -> list[SiloRecord]:
        if status is None:
            rows = self.table.query_entities("PartitionKey eq @p", parameters={"p": _PARTITION})
        else:
            rows = self.table.query_entities("PartitionKey eq @p and status eq @s",
                                             parameters={"p": _PARTITION, "s": status})
        return sorted((SiloRecord.from_entity(r) for r in rows), key=lambda r: r.name)

    def put(self, record: SiloRecord) -> SiloRecord:
        """Insert or replace the row; ``created_at`` of an existing row is kept."""
        try:
            created = self.get(record.name).created_at
        except UnknownSilo:
            created = record.created_at
        stored = record.model_copy(update={"created_at": created, "updated_at": _now()})
        self.table.upsert_entity(stored.to_entity(), mode=UpdateMode.REPLACE)
        return stored

    def set_status(self, name: str, status: Status) -> SiloRecord:
        record = self.get(name)
        return self.put(SiloRecord.model_validate({**record.model_dump(), "status": status}))

    def remove(self, name: str) -> None:
        """Delete the row; removing an unknown silo raises ``UnknownSilo``."""
        self.get(name)
        self.table.delete_entity(_PARTITION, name)
