"""Helpers for the host tests (the feature app, starting instances, reading side effects)."""
from __future__ import annotations

import json
from pathlib import Path

import requests

from fedfunc.host.testing import HostProcess, wait_for_instance

APPS = Path(__file__).parent / "apps"
FUNCTION_KEY, MASTER_KEY = "function-key-for-tests", "master-key-for-tests"
NEVER = "0 0 0 1 1 *"


def features_env(out: Path, azurite, **extra) -> dict:
    return {"FEATURES_OUT": str(out), "TICK_SCHEDULE": NEVER,
            "UPLOADS_CONN": azurite.silo_accounts[0].connection_string,
            "AzureWebJobs.disabled_fn.Disabled": "true", **extra}



def start(host: HostProcess, name: str, instance_id: str | None = None, payload=None) -> dict:
    """Start through the app's own starter route; returns the check-status payload."""
    path = f"/api/start/{name}" + (f"/{instance_id}" if instance_id else "")
    r = requests.post(host.url(path), data=json.dumps(payload) if payload is not None else b"")
    assert r.status_code == 202, r.text
    return r.json()


def finished(payload: dict, timeout: float = 20.0) -> dict:
    return wait_for_instance(payload["statusQueryGetUri"], timeout=timeout)


def lines(out: Path, kind: str) -> list:
    path = out / f"{kind}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
