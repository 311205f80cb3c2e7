"""Onboarding steps, each an idempotent ensure-step on the silo provisioner ``services`` chose.

The provisioner (``fedfunc.contracts.SiloProvisioner``) does the backend's work — Azurite pool accounts
locally, ARM/AML resources on Azure; these steps keep the registry consistent around it.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedfunc.contracts import TASK_NAME
from fedfunc.coordinator.services import Services
from fedfunc.registry import SILO_NAME, UnknownSilo
from fedfunc.security.keys import parse_public_b64
from fedfunc.security.policy import MinPrivacy
from fedfunc.validation import parse


class InitialPolicy(BaseModel):
    """What the admin proposes for the silo owner's first policy; an existing policy in the silo wins."""

    model_config = ConfigDict(extra="forbid")
    trusted_signers: list[str] = Field(default_factory=list, description="base64 Ed25519 public keys")
    allowed_tasks: list[str] = Field(default_factory=list, description="task names (as in their task.toml)")
    min_privacy: MinPrivacy | None = None
    max_rounds_per_day: int | None = Field(None, ge=0)

    @field_validator("trusted_signers")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            parse_public_b64(key)
        return v

    @field_validator("allowed_tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not re.match(TASK_NAME, t)]
        if bad:
            raise ValueError(f"{bad}: a task name is lowercase letters, digits, '_' or '-', starting with a letter")
        return v


class SiloRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=SILO_NAME)
    compute: str = Field("local", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    policy: InitialPolicy = Field(default_factory=InitialPolicy)


class OnboardingError(ValueError):
    pass


def parse_request(body: object) -> SiloRequest:
    """Validated onboarding request; the message names each bad field."""
    return parse(SiloRequest, body, OnboardingError, "silo request")


def validate(svc: Services, request: SiloRequest) -> SiloRequest:
    try:
        svc.provisioner.check_compute(request.compute)
    except ValueError as e:
        raise OnboardingError(str(e)) from None
    try:
        existing = svc.registry.get(request.name)
    except UnknownSilo:
        return request
    if existing.compute != request.compute:
        raise OnboardingError(f"silo {request.name!r} exists on compute {existing.compute!r}, not {request.compute!r}")
    return request


def provision(svc: Services, request: SiloRequest) -> dict:
    try:  # re-onboarding a ready or disabled silo keeps its status until mark_ready
        status = svc.registry.get(request.name).status
    except UnknownSilo:
        status = "onboarding"
    try:
        record = svc.provisioner.provision(request.name, request.compute, request.policy.model_dump())
    except ValueError as e:  # a setting the provisioner needs is missing
        raise OnboardingError(str(e)) from None
    svc.registry.put(record.model_copy(update={"status": status}))
    return {"account": record.account, "blob_url": record.blob_url}


def grant(svc: Services, request: SiloRequest) -> dict:
    """Let the orchestrator hear about (and read) the silo's outbox, and nothing else of the silo."""
    return svc.provisioner.grant(svc.registry.get(request.name))


def smoke(svc: Services, request: SiloRequest, smoke_id: str) -> dict:
    """A non-ML job on the silo's compute: reads its data, writes its outbox, and is refused elsewhere."""
    result = svc.provisioner.smoke(svc.registry.get(request.name), smoke_id)
    if not result.get("ok"):
        failed = [k for k, passed in result.get("checks", {}).items() if not passed]
        raise OnboardingError(f"smoke job on silo {request.name!r} failed checks {failed} {result.get('reason', '')}")
    return result


def mark_ready(svc: Services, request: SiloRequest) -> dict:
    record = svc.registry.set_status(request.name, "ready")
    svc.audit.record("silo_onboarded", silo=request.name, account=record.account, compute=record.compute,
                     trusted_signers=",".join(record.trusted_signers))
    return {"status": record.status}


def abandon(svc: Services, request: SiloRequest) -> None:
    """Undo a failed onboarding's registration; a silo that was ready before stays as it was.
    Its storage is kept, and reused by the next attempt."""
    try:
        record = svc.registry.get(request.name)
    except UnknownSilo:
        return
    if record.status == "onboarding":
        svc.registry.remove(request.name)
        svc.provisioner.release(request.name, storage=False)


def remove(svc: Services, name: str) -> None:
    """Unregister a silo and release what provisioning claimed (locally its pool account, revoking the SAS)."""
    svc.registry.remove(name)
    svc.provisioner.release(name, storage=True)
