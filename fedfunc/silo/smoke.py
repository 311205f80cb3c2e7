"""The onboarding smoke job: proves a silo's compute can do what a training job needs and nothing else.

Run as a silo job (only the silo's home), it checks, with the silo's own credentials: its policy is
readable and valid, its ``data`` can be listed, its ``outbox`` can be written; and that the read SAS on
the orchestrator's ``models`` cannot write and the silo's key is refused on the orchestrator's account.
It touches no training data and trains nothing.
"""
from __future__ import annotations

import json

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from fedfunc import layout
from fedfunc.security import Refused
from fedfunc.security.policy import parse_policy
from fedfunc.silo.home import SiloCredentials
from fedfunc.silo.io import BlobSiloIO

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


def _policy_problem(io: BlobSiloIO, silo: str) -> str | None:
    try:
        policy = parse_policy(io.read_policy())
    except Refused as e:
        return str(e)
    return None if policy.silo == silo else f"policy is for silo {policy.silo!r}, not {silo!r}"


def run_smoke(creds: SiloCredentials, smoke_id: str) -> dict:
    """Run the checks; returns ``{"ok", "checks": {name: passed}, "reason"}`` and writes it to ``outbox/smoke/``."""
    io = BlobSiloIO(creds.connection_string, creds.models_sas)
    models = ContainerClient.from_container_url(creds.models_url)
    foreign = BlobServiceClient(models.url.rsplit("/", 1)[0], credential=io.service.credential)
    problem = _policy_problem(io, creds.silo)
    checks = {
        "policy_valid": problem is None,
        "data_readable": not _denied(lambda: list(io.service.get_container_client(layout.DATA).list_blobs())),
        "models_write_refused": _denied(lambda: models.upload_blob(f"{SMOKE_DIR}/{smoke_id}", b"x")),
        "orchestrator_account_refused": _denied(lambda: list(foreign.list_containers())),
    }
    report = {"silo": creds.silo, "smoke_id": smoke_id, "checks": checks, "reason": problem}
    # Deterministic bytes, so a retried smoke job with the same id rewrites the same blob.
    io.outbox.create(f"{SMOKE_DIR}/{smoke_id}.json", json.dumps(report, sort_keys=True).encode())
    checks["outbox_writable"] = True  # the write above raised otherwise
    return {"ok": all(checks.values()), "checks": checks, "reason": problem}
