"""A local silo's home folder: the only secrets a local silo job gets.

``credentials.json`` holds the silo's own storage connection string and read-only SAS URLs of the
orchestrator's ``models`` and ``bundles`` containers, nothing of any other silo. It is written mode 0600.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

HOME_ENV = "FEDFUNC_SILO_HOME"
CREDENTIALS = "credentials.json"
# What a local silo job's environment keeps of its parent's: nothing that names a secret or another party.
PASSTHROUGH = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ")
REPO_ROOT = Path(__file__).resolve().parents[2]


class SiloCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    silo: str
    account: str
    connection_string: str  # the silo's own account only
    models_url: str         # the orchestrator's models container URL with a read-only SAS
    bundles_url: str        # the orchestrator's bundles container URL with a read-only SAS

    @property
    def models_sas(self) -> str:
        return self.models_url.partition("?")[2]


def silo_home(home_root: Path, silo: str) -> Path:
    """``home_root/silos/{silo}``; ValueError for a name no silo can have (never a path elsewhere)."""
    from fedfunc.validation import SILO_NAME_RULE, is_silo_name

    if not is_silo_name(silo):
        raise ValueError(f"{str(silo)[:40]!r} is not a silo name ({SILO_NAME_RULE})")
    return Path(home_root) / "silos" / silo


def job_environment(home_root: Path, silo: str, parent: dict[str, str]) -> dict[str, str]:
    """A local silo job's whole environment: the harmless parts of ``parent`` and its own home, no more."""
    home = silo_home(home_root, silo)
    env = {k: parent[k] for k in PASSTHROUGH if k in parent}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(HOME=str(home), **{HOME_ENV: str(home.resolve())})
    return env


def write_credentials(home: Path, creds: SiloCredentials) -> Path:
    """Write atomically with mode 0600 (created with that mode, never world-readable in between)."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    path, tmp = home / CREDENTIALS, home / f".{CREDENTIALS}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(creds.model_dump_json(indent=2))
    tmp.replace(path)
    return path


def read_credentials(home: Path) -> SiloCredentials:
    path = Path(home) / CREDENTIALS
    if not path.is_file():
        raise FileNotFoundError(f"silo home {home} has no {CREDENTIALS}; was the silo provisioned?")
    return SiloCredentials.model_validate(json.loads(path.read_text()))


def home_from_env() -> Path:
    value = os.environ.get(HOME_ENV)
    if not value:
        raise RuntimeError(f"{HOME_ENV} is not set: a local silo job needs its silo home folder")
    return Path(value)
