"""Start and stop Azurite, the Azure Storage emulator, with one storage account per party.

Azurite reads its accounts from ``AZURITE_ACCOUNTS`` only when it starts, so we start it with the
orchestrator's account plus a pool of silo accounts; onboarding a silo locally claims a pool account.
Each account has its own random key, so one silo's key is refused on another silo's account — the
same isolation separate storage accounts give on Azure. Keys persist in ``accounts.json`` beside the
data so a restart keeps them.

Ports: on first start Azurite binds port 0 and reports the ports it bound ("successfully listening
at ..."), which are then kept in ``accounts.json`` (connection strings handed out name them), so no
port is chosen and released before Azurite binds it; later starts bind the same ports again.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ORCHESTRATOR_ACCOUNT = "fedorch"
SILO_POOL_SIZE = 12
REPO_ROOT = Path(__file__).resolve().parent.parent


def silo_pool_names(size: int = SILO_POOL_SIZE) -> list[str]:
    return [f"silo{i:02d}" for i in range(1, size + 1)]


@dataclass(frozen=True)
class Account:
    name: str
    key: str
    blob_port: int
    table_port: int
    host: str = "127.0.0.1"

    @property
    def blob_url(self) -> str:
        return f"http://{self.host}:{self.blob_port}/{self.name}"

    @property
    def table_url(self) -> str:
        return f"http://{self.host}:{self.table_port}/{self.name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.name};AccountKey={self.key};"
            f"BlobEndpoint={self.blob_url};TableEndpoint={self.table_url};"
        )


SERVICES = ("blob", "queue", "table")
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[^:]+:(\d+)")


def _accounts(cfg: dict) -> dict[str, Account]:
    if not cfg.get("blob_port") or not cfg.get("table_port"):
        raise RuntimeError("Azurite has not started yet: its ports are not known")
    return {n: Account(n, k, cfg["blob_port"], cfg["table_port"]) for n, k in cfg["keys"].items()}


def read_accounts(location: Path) -> dict[str, Account]:
    """The accounts of an Azurite folder, by name: read only, nothing started or rewritten."""
    return _accounts(json.loads((Path(location) / "accounts.json").read_text()))


def azurite_binary() -> str:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        raise RuntimeError("Azurite is not installed: run `npm ci` in the repository (make does it)")
    return found


class Azurite:
    """One Azurite process (blob + queue + table) with persistent data under ``location``."""

    def __init__(self, location: Path, pool_size: int = SILO_POOL_SIZE,
                 blob_port: int | None = None, table_port: int | None = None):
        self.location = Path(location)
        self.location.mkdir(parents=True, exist_ok=True)
        self._config_path = self.location / "accounts.json"
        self._config = self._load_or_create(pool_size, blob_port, table_port)
        self.proc: subprocess.Popen | None = None

    def _load_or_create(self, pool_size, blob_port, table_port) -> dict:
        if self._config_path.exists():
            cfg = json.loads(self._config_path.read_text())
        else:
            names = [ORCHESTRATOR_ACCOUNT, *silo_pool_names(pool_size)]
            cfg = {"keys": {n: base64.b64encode(secrets.token_bytes(64)).decode() for n in names}}
        cfg["blob_port"] = blob_port or cfg.get("blob_port")
        cfg["table_port"] = table_port or cfg.get("table_port")
        cfg.setdefault("queue_port", None)
        self._save(cfg)
        return cfg

    def _save(self, cfg: dict) -> None:
        tmp = self._config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cfg, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self._config_path)

    @property
    def log_path(self) -> Path:
        """Azurite's output, with its access log: one line per request once answered (`fedfunc host --storage-log`)."""
        return self.location / "azurite.log"

    @property
    def data_dir(self) -> Path:
        """Where Azurite keeps blobs and metadata (what `fedfunc host --watch` watches)."""
        return self.location / "data"

    def account(self, name: str) -> Account:
        accounts = _accounts(self._config)
        if name not in accounts:
            raise KeyError(f"no Azurite account named {name!r}")
        return accounts[name]

    @property
    def orchestrator(self) -> Account:
        return self.account(ORCHESTRATOR_ACCOUNT)

    @property
    def silo_accounts(self) -> list[Account]:
        return [self.account(n) for n in self._config["keys"] if n != ORCHESTRATOR_ACCOUNT]

    def serve_through(self, ports: dict[str, int]) -> None:
        """Let clients reach Azurite through other ports (a proxy in front of it, e.g. one injecting faults):
        connection strings then name ``ports``, and Azurite listens on the ports it has, or, before its
        first start, on any free ports, which it reports when it starts (``listen_ports`` in its config)."""
        self._config["listen_ports"] = self._config.get("listen_ports") or {
            name: self._config.get(f"{name}_port") or 0 for name in SERVICES}
        self._config.update({f"{name}_port": port for name, port in ports.items()})
        self._save(self._config)

    def start(self, timeout: float = 30.0) -> "Azurite":
        """Start Azurite on the kept ports (port 0 for those never bound) and wait until it says
        where each service listens; the ports it reports are kept for later starts."""
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = ";".join(f"{n}:{k}" for n, k in self._config["keys"].items())
        listen = self._config.get("listen_ports")
        ports = {name: (listen.get(name) if listen else self._config.get(f"{name}_port")) or 0 for name in SERVICES}
        cmd = [
            azurite_binary(), "--location", str(self.data_dir),  # not --silent: the access log names each write
            "--blobPort", str(ports["blob"]), "--queuePort", str(ports["queue"]),
            "--tablePort", str(ports["table"]), "--blobHost", "127.0.0.1",
            "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
            "--disableTelemetry", "--skipApiVersionCheck", "--loose",
        ]
        log_path = self.log_path
        log = open(log_path, "ab")
        offset = log.tell()
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(offset)
                bound = {m.group(1).lower(): int(m.group(2)) for m in _LISTENING.finditer(f.read().decode(errors="replace"))}
            if len(bound) == len(SERVICES):
                if listen:
                    listen.update(bound)
                    for name in SERVICES:  # a service with no proxy in front is reached where it listens
                        self._config[f"{name}_port"] = self._config.get(f"{name}_port") or bound[name]
                else:
                    self._config.update({f"{name}_port": port for name, port in bound.items()})
                self._save(self._config)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.proc.returncode} (ports {ports}; 0 = any free port); "
                                   f"see {log_path}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite did not report listening within {timeout:.0f}s; see {log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
