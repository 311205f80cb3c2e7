"""The host's keys, as Azure Functions keeps them: a master key (admin level, opens every route),
a default host key (function level), one system key per extension webhook
(`durabletask_extension`, `eventgrid_extension`, `blobs_extension`) and, for the local Event Grid
custom topics, one key per topic (sent by publishers as `aeg-sas-key`).

Azure always has keys, so this host does too: missing keys are generated on first start and kept
in a JSON file next to the state (mode 0600). `FEDFUNC_HOST_MASTER_KEY` / `FEDFUNC_HOST_FUNCTION_KEY`,
when set, take precedence over the file for those two keys (and are not written to it).
"""
from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MASTER_KEY_SETTING = "FEDFUNC_HOST_MASTER_KEY"
FUNCTION_KEY_SETTING = "FEDFUNC_HOST_FUNCTION_KEY"
SYSTEM_KEYS = ("durabletask_extension", "eventgrid_extension", "blobs_extension")


def new_key() -> str:
    return secrets.token_urlsafe(32)


def new_topic_key() -> str:
    """Base64, like Event Grid's topic keys (SAS tokens are signed with the decoded bytes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def same(given: str | None, key: str | None) -> bool:
    """Constant-time comparison; an empty or missing value never matches."""
    return bool(given) and bool(key) and hmac.compare_digest(given.encode(), key.encode())


class KeysError(RuntimeError):
    """The keys file cannot be used; the message names the file."""


@dataclass
class HostKeys:
    master: str
    function: str
    system: dict[str, str]
    topics: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] = os.environ) -> "HostKeys":
        """Read `path`, generate what is missing, write it back; settings override master/function."""
        path = Path(path)
        try:
            stored = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise KeysError(f"host keys file {path} is not readable JSON: {exc}") from exc
        if not isinstance(stored, dict):
            raise KeysError(f"host keys file {path} must hold a JSON object")
        written = {
            "masterKey": stored.get("masterKey") or new_key(),
            "functionKeys": {"default": new_key(), **(stored.get("functionKeys") or {})},
            "systemKeys": {**{name: new_key() for name in SYSTEM_KEYS}, **(stored.get("systemKeys") or {})},
            "topicKeys": dict(stored.get("topicKeys") or {}),
        }
        if written != stored:
            _write_private(path, written)
        return cls(master=environ.get(MASTER_KEY_SETTING) or written["masterKey"],
                   function=environ.get(FUNCTION_KEY_SETTING) or written["functionKeys"]["default"],
                   system=written["systemKeys"], topics=written["topicKeys"], path=path)

    def level(self, given: str | None) -> tuple[str, str | None]:
        """What a presented key opens: ("admin", None), ("system", name), ("function", None) or ("anonymous", None)."""
        if same(given, self.master):
            return "admin", None
        for name, key in self.system.items():
            if same(given, key):
                return "system", name
        if same(given, self.function):
            return "function", None
        return "anonymous", None

    def topic_key(self, topic: str) -> str:
        """The key of local custom topic `topic`, created (and saved) on first use."""
        if topic not in self.topics:
            self.topics[topic] = new_topic_key()
            if self.path:
                stored = json.loads(self.path.read_text())
                stored["topicKeys"] = {**stored.get("topicKeys", {}), topic: self.topics[topic]}
                _write_private(self.path, stored)
        return self.topics[topic]


def _write_private(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2)
    tmp.replace(path)


def read_keys(path: Path) -> dict:
    """The keys file as stored (for tools and tests that call the host)."""
    return json.loads(Path(path).read_text())
