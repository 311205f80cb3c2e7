"""The onboarding smoke job: proves a silo's compute can do what a training job needs and nothing else.

Run as a silo job (only the silo's home), it checks, with the silo's own credentials: its policy is
readable and valid, its ``data`` can be listed, its ``outbox`` can be written; and that the read SAS on
the orchestrator's ``models`` cannot write and the silo's key is refused on the orchestrator's account.
It touches no training data and trains nothing.
"""
from __future__ import annotations

import json
import os

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from fedfunc import layout
from fedfunc.security import Refused
from fedfunc.security.policy import parse_policy
from fedfunc.silo.home import SiloCredentials
from fedfunc.silo.io import BlobSiloIO, MountedSiloIO

SMOKE_DIR = "smoke"


def _denied(action) -> bool:
    """True if storage refuses ``action`` (auth or permission), False if it succeeds."""
    try:
        action()
    except ResourceNotFoundError:
        return False  # reached the resource: not an access refusal
    except (ClientAuthenticationError, HttpResponseError):
        return True
    return False


def _policy_problem(io: BlobSiloIO | MountedSiloIO, silo: str) -> str | None:
    try:
        policy = parse_policy(io.read_policy())
    except Refused as e:
        return str(e)
    return None if policy.silo == silo else f"policy is for silo {policy.silo!r}, not {silo!r}"


def run_smoke(creds: SiloCredentials, smoke_id: str) -> dict:
    """Run the checks with the silo's own key (local); returns ``{"ok", "checks", "reason"}``."""
    io = BlobSiloIO.of(creds)
    models = ContainerClient.from_container_url(creds.models_url)
    return _checked(io, creds.silo, smoke_id, models, io.service.credential,
                    lambda: list(io.service.get_container_client(layout.DATA).list_blobs()))


def run_mounted_smoke(io: MountedSiloIO, silo: str, smoke_id: str, models_url: str) -> dict:
    """The same checks on AML: ``data`` and ``outbox`` mounted by AML, storage reached as the compute's
    managed identity (the only credential the job has)."""
    from fedfunc.storage import credential

    models = ContainerClient.from_container_url(models_url, credential=credential())
    return _checked(io, silo, smoke_id, models, credential(), lambda: os.listdir(io.data_dir))


def _checked(io, silo: str, smoke_id: str, models: ContainerClient, own_credential, list_data) -> dict:
    """Policy valid, data listable, models not writable, the orchestrator's account closed; the report is
    written to ``outbox/smoke/{id}.json`` (which proves the outbox is writable)."""
    foreign = BlobServiceClient(models.url.rsplit("/", 1)[0], credential=own_credential)
    problem = _policy_problem(io, silo)
    checks = {
        "policy_valid": problem is None,
        "data_readable": _reads(list_data),
        "models_write_refused": _denied(lambda: models.upload_blob(f"{SMOKE_DIR}/{smoke_id}", b"x")),
        "orchestrator_account_refused": _denied(lambda: list(foreign.list_containers())),
    }
    report = {"silo": silo, "smoke_id": smoke_id, "checks": checks, "reason": problem}
    # Deterministic bytes, so a retried smoke job with the same id rewrites the same blob.
    io.outbox.create(smoke_report(smoke_id), json.dumps(report, sort_keys=True).encode())
    checks["outbox_writable"] = True  # the write above raised otherwise
    return {"ok": all(checks.values()), "checks": checks, "reason": problem}


def smoke_report(smoke_id: str) -> str:
    """Where a smoke job writes its verdict in the silo's ``outbox``."""
    return f"{SMOKE_DIR}/{smoke_id}.json"


def _reads(list_data) -> bool:
    try:
        list_data()
    except (OSError, HttpResponseError, ClientAuthenticationError):
        return False
    return True
