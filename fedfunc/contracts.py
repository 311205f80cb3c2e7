"""The contracts between the orchestrator, the silos and the backends: what crosses a seam, typed once.

Tasks, security checks, the silo runner, the coordinator and both backends (local, Azure) agree on these
types and protocols; none of them owns them. Nothing here does I/O or imports Azure.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from fedfunc.registry import SiloRecord


# A task's name: what silo policies allow and what data lives under in a silo's ``data`` container.
TASK_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
# A bundle's identity: the sha256 of its signed manifest (``fedfunc.security.bundle``).
BUNDLE_HASH = r"^[0-9a-f]{64}$"


class Hyperparams(BaseModel):
    """Local training settings every silo of a run trains with (fixed by the signed bundle).

    The platform's training loop reads these four; a task's own schema (``fedfunc.tasks.api``) extends
    them with its own fields, and the platform's bounds below still apply to it.
    """

    epochs: int = Field(1, ge=1, le=100)
    lr: float = Field(0.05, gt=0, le=10)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0


class Message(BaseModel):
    """A value that crosses a process boundary as JSON and is validated again on arrival."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def wire(self) -> dict:
        """The JSON form (what Durable stores in history and hands to the other side)."""
        return self.model_dump(mode="json")


class ModelRef(Message):
    """A global model in the orchestrator's ``models`` container, pinned by its sha256, and the server
    strategy's state that goes with it (optimizer moments; ``fedfunc.aggregation.state``) in ``runs``,
    pinned the same way: the next round reads both, so a resumed run continues from exactly this pair."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    state_path: str | None = None
    state_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


JobMode = Literal["train", "evaluate"]


class SiloJobRequest(BaseModel):
    """Everything a silo job needs, and nothing secret about other silos.

    ``mode``: ``train`` evaluates the incoming global model on the silo's test part, trains on its
    training part and publishes both; ``evaluate`` only evaluates (the final model, held-out evaluators).
    The task's code, hyper-parameters and initial weights are in the signed bundle named by ``bundle``,
    which the silo reads from the orchestrator's ``bundles`` container with its own read-only access.
    """

    run_id: str
    round: int
    silo: str
    nonce: str
    task: str = Field(pattern=TASK_NAME)
    mode: JobMode = "train"
    model_url: str       # global model; locally a URL carrying a read-only SAS, on Azure read with the job's identity
    model_sha256: str
    outbox_prefix: str   # fedfunc.layout.outbox_prefix(run, round, silo)
    ticket: str | None = None   # job ticket signed by the orchestrator (fedfunc.security)
    bundle: str | None = Field(None, pattern=BUNDLE_HASH)  # the signed bundle's hash (fedfunc.security.bundle)
    deadline: datetime | None = None  # the round's deadline: a job still running then is stopped and fails

    @field_validator("deadline")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc)

    @property
    def job_key(self) -> str:
        return f"{self.run_id}-r{self.round}-{self.silo}"


# Reads one blob from a silo's outbox: (silo, path, max_bytes) -> bytes; over the bound is an error.
OutboxReader = Callable[[str, str, int], bytes]


class BlobRange(Protocol):
    """One blob read by byte ranges, pinned to the version seen when it was opened: a range read of a
    blob that changed since is an error, so every block of an update comes from the same bytes."""

    size: int
    version: str   # the blob's ETag (or another identifier of its bytes)

    def read(self, offset: int, length: int) -> bytes: ...


# Opens one blob of a silo's outbox for range reads: (silo, path) -> BlobRange.
OutboxOpener = Callable[[str, str], BlobRange]


class SiloJobBackend(Protocol):
    """How one silo's training job for one round gets started: local processes or Azure ML jobs."""

    def submit(self, request: SiloJobRequest) -> str:
        """Start the job and return its id. Submitting the same (run, round, silo) twice starts it once."""

    def cancel(self, job_id: str) -> None:
        """Stop a job if it still runs; unknown or finished jobs are ignored."""


class SiloProvisioner(Protocol):
    """Where a silo's storage, identity and compute come from: Azurite pool accounts or Azure resources.

    Every method is an idempotent ensure-step, so a retried onboarding activity leaves the same state.
    """

    def check_compute(self, compute: str) -> None:
        """Raise ``ValueError`` naming ``compute`` if silos of this backend cannot run on it."""

    def provision(self, name: str, compute: str, policy: dict) -> SiloRecord:
        """Storage, containers, identity, compute; ``policy`` (the admin's proposal) seeds the silo's own."""

    def grant(self, record: SiloRecord) -> dict:
        """Let the orchestrator hear about (and read) the silo's outbox, and nothing else of the silo."""

    def smoke(self, record: SiloRecord, smoke_id: str) -> dict:
        """Run the onboarding smoke job on the silo's compute: ``{"ok", "checks", "reason"?}``."""

    def release(self, name: str, *, storage: bool) -> None:
        """Undo the orchestrator's wiring to the silo; ``storage`` also frees what provisioning claimed."""
