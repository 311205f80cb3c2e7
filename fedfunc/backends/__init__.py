"""Silo job backends: how one silo's training job for one round gets started.

The orchestration only ever sees this interface; ``FEDFUNC_JOB_BACKEND`` picks the implementation
(``local`` processes or ``aml`` command jobs) with no change to orchestration code.
"""
from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field


class Hyperparams(BaseModel):
    epochs: int = Field(1, ge=1, le=100)
    lr: float = Field(0.05, gt=0, le=10)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0


class SiloJobRequest(BaseModel):
    """Everything a silo job needs, and nothing secret about other silos."""

    run_id: str
    round: int
    silo: str
    nonce: str
    task: str
    hyperparams: Hyperparams
    model_url: str       # global model; locally a URL carrying a read-only SAS, on Azure read with the job's identity
    model_sha256: str
    outbox_prefix: str   # fedfunc.layout.outbox_prefix(run, round, silo)
    ticket: str | None = None   # job ticket signed by the orchestrator (fedfunc.security)
    bundle: dict | None = None  # signed code bundle reference (fedfunc.security)

    @property
    def job_key(self) -> str:
        return f"{self.run_id}-r{self.round}-{self.silo}"


class SiloJobBackend(Protocol):
    def submit(self, request: SiloJobRequest) -> str:
        """Start the job and return its id. Submitting the same (run, round, silo) twice starts it once."""

    def cancel(self, job_id: str) -> None:
        """Stop a job if it still runs; unknown or finished jobs are ignored."""
