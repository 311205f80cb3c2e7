"""Names of a silo's Azure resources, derived from the silo name so every party computes the same ones.

``infra/modules/silo.bicep`` derives the identity and datastore names the same way (a test checks
that the two agree); the storage account and compute names are parameters there.
"""
from __future__ import annotations

import hashlib
import re


def _digest(*parts: str, n: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def identity(silo: str) -> str:
    return f"id-fl-{silo}"


def datastore(silo: str, container: str) -> str:
    """AML datastore names allow letters, digits and underscores only."""
    return f"{silo.replace('-', '_')}_{container}"


def compute(silo: str) -> str:
    """AmlCompute names: a letter first, letters, digits and hyphens, at most 24 characters."""
    name = f"fl-{silo}"
    return name if len(name) <= 24 else f"fl-{silo[:12].rstrip('-')}-{_digest(silo)}"


def storage_account(silo: str, resource_group_id: str) -> str:
    """Globally unique, 3-24 lowercase letters and digits; stable for a silo within one resource group."""
    return f"fl{re.sub('[^a-z0-9]', '', silo)[:14]}{_digest(resource_group_id, silo)}"


def _safe(text: str) -> str:
    """AML job and experiment names: letters, digits, underscores and hyphens."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def experiment(run: str) -> str:
    """All of a run's silo jobs, grouped in AML studio."""
    return _safe(f"fedfunc-{run}")[:250]


def job_name(run: str, round_: int, silo: str) -> str:
    """Deterministic AML job name: resubmitting the same (run, round, silo) finds the same job.

    The digest keeps names distinct when sanitising the run id would make two of them equal.
    """
    safe = _safe(f"fedfunc-{run}-r{round_}-{silo}")[:200]
    return f"{safe}-{_digest(run, str(round_), silo)}"


def run_job_name(run: str, silo: str) -> str:
    """Deterministic name of a silo's long-lived job for a whole run (``fedfunc.backends.aml_run_job``)."""
    return f"{_safe(f'fedfunc-{run}-{silo}')[:200]}-{_digest(run, silo)}"


def smoke_job_name(silo: str, smoke_id: str) -> str:
    """Deterministic name of an onboarding smoke job: a retried onboarding step finds the same job."""
    return f"{_safe(f'fedfunc-smoke-{silo}')[:120]}-{_digest(silo, smoke_id)}"
