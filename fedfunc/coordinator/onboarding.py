"""Onboarding steps, each an idempotent ensure-step on the local or the Azure backend.

Local: the silo's storage is an Azurite pool account (keys stay in the silo's home), access is an
outbox read SAS for the orchestrator plus a local Event Grid subscription. Azure: ARM/AML ensure-steps
(``fedfunc.azure.onboarding``) — storage, identity, compute, datastores, role assignments, Event Grid.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedfunc import layout
from fedfunc.coordinator.services import Services
from fedfunc.registry import SILO_NAME, SiloRecord, UnknownSilo
from fedfunc.security.keys import parse_public_b64, public_b64
from fedfunc.security.policy import MinPrivacy, SiloPolicy
from fedfunc.silo.smoke import smoke_report
from fedfunc.tasks.registry import TASKS
from fedfunc.validation import parse

AZURE_PROVISION = ("storage", "containers", "identity", "compute", "datastores")
AZURE_GRANT = ("role_assignments", "event_subscriptions")
OUTBOX_EVENTS = f"/blobServices/default/containers/{layout.OUTBOX}/blobs/runs/"


class InitialPolicy(BaseModel):
    """What the admin proposes for the silo owner's first policy; an existing policy in the silo wins."""

    model_config = ConfigDict(extra="forbid")
    trusted_signers: list[str] = Field(default_factory=list, description="base64 Ed25519 public keys")
    allowed_tasks: list[str] = Field(default_factory=list)
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
        unknown = sorted(set(v) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
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
    local = svc.settings.job_backend == "local"
    if local != (request.compute == "local"):
        raise OnboardingError(f"compute: {request.compute!r} — the {svc.settings.job_backend} backend "
                              + ("runs silos on compute 'local'" if local else "needs an AML compute name"))
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
    if svc.settings.job_backend == "local":
        from fedfunc.silo.local import provision_local_silo

        if svc.settings.azurite_home is None:
            raise OnboardingError("FEDFUNC_AZURITE_HOME: missing; local onboarding claims accounts from Azurite's pool")
        policy = SiloPolicy(silo=request.name, orchestrator_keys=[public_b64(svc.ticket_key.public_key())],
                            **request.policy.model_dump())
        record = provision_local_silo(request.name, azurite_home=svc.settings.azurite_home,
                                      orchestrator_conn=svc.settings.storage.connection_string,
                                      home_root=svc.settings.local_home, initial_policy=policy,
                                      compute=request.compute)
    else:
        from fedfunc.azure.onboarding import ensure, silo_record

        for step in AZURE_PROVISION:
            ensure(svc.azure_gateway, svc.settings.aml, request.name, step, compute=request.compute)
        record = silo_record(svc.settings.aml, request.name, request.policy.trusted_signers, compute=request.compute)
    svc.registry.put(record.model_copy(update={"status": status}))
    return {"account": record.account, "blob_url": record.blob_url}


def grant(svc: Services, request: SiloRequest) -> dict:
    """Let the orchestrator hear about (and read) the silo's outbox, and nothing else of the silo."""
    record: SiloRecord = svc.registry.get(request.name)
    if svc.settings.job_backend == "local":
        from fedfunc.host.subscriptions import put_subscription

        put_subscription(subscription_name(request.name), "on_update",
                         f"{record.blob_url}?{record.outbox_read_sas}", layout.OUTBOX,
                         subject_begins_with=OUTBOX_EVENTS)
        put_subscription(subscription_name(request.name, layout.DATA), "on_data_uploaded",
                         _data_events_connection(svc, record), layout.DATA)
        return {"event_subscriptions": [subscription_name(request.name), subscription_name(request.name, layout.DATA)]}
    from fedfunc.azure.onboarding import ensure

    return {step: ensure(svc.azure_gateway, svc.settings.aml, request.name, step, compute=request.compute)
            for step in AZURE_GRANT}


def subscription_name(silo: str, container: str = layout.OUTBOX) -> str:
    return f"{container}-{silo}"


def _data_events_connection(svc: Services, record: SiloRecord) -> str:
    """A list-only SAS on the silo's ``data`` for the emulated Event Grid (names and sizes, never contents).

    On Azure the storage account's system topic publishes these events itself; locally the host's
    watcher stands in for it, and onboarding (the platform admin who created the account) hands it this.
    """
    from fedfunc.azurite import read_accounts

    account = read_accounts(svc.settings.azurite_home)[record.account]
    now = datetime.now(timezone.utc)
    sas = generate_container_sas(account.name, layout.DATA, account_key=account.key,
                                 permission=ContainerSasPermissions(list=True),
                                 start=now - timedelta(minutes=5), expiry=now + timedelta(days=365))
    return f"{record.blob_url}?{sas}"


def smoke(svc: Services, request: SiloRequest, smoke_id: str) -> dict:
    """A non-ML job on the silo's compute: reads its data, writes its outbox, and is refused elsewhere.
    On AML the verdict is the report the job wrote to the silo's outbox, read with the app's identity."""
    if svc.settings.job_backend == "local":
        result = svc.backend.smoke(request.name, smoke_id)
    else:
        models_url = f"{svc.settings.storage.blob_service_uri}/{layout.MODELS}"
        job = svc.backend.smoke(request.name, smoke_id, models_url)
        try:
            result = json.loads(svc.outbox_reader()(request.name, smoke_report(smoke_id), 64 * 1024))
        except Exception as e:  # no verdict: the job failed before writing it
            result = {"ok": False, "checks": {}, "reason": f"smoke job {job['job']} {job['status']}: "
                                                          f"no report ({type(e).__name__})"}
        result["ok"] = job["ok"] and all(result.get("checks", {}).values()) and bool(result.get("checks"))
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
    """Undo a failed onboarding's registration; a silo that was ready before stays as it was."""
    try:
        record = svc.registry.get(request.name)
    except UnknownSilo:
        return
    if record.status == "onboarding":
        svc.registry.remove(request.name)
        if svc.settings.job_backend == "local":
            unsubscribe_local(request.name)


def unsubscribe_local(silo: str) -> None:
    from fedfunc.host.subscriptions import delete_subscription

    for container in (layout.OUTBOX, layout.DATA):
        delete_subscription(subscription_name(silo, container))


def remove(svc: Services, name: str) -> None:
    """Unregister a silo; locally also release its pool account (revoking the outbox SAS) and its home."""
    svc.registry.remove(name)
    if svc.settings.job_backend == "local":
        from fedfunc.silo.local import release_local_silo

        unsubscribe_local(name)
        release_local_silo(name, azurite_home=svc.settings.azurite_home,
                           orchestrator_conn=svc.settings.storage.connection_string, home_root=svc.settings.local_home)
