"""Run `fedfunc host` in a subprocess for tests and demos: the port the host bound (it binds port 0
and reports it in its ready file, so no port is chosen and released first), its keys, a readiness
wait, `kill -9` and restart on the same state and port.

    with HostProcess(app_dir, state=tmp / "state.sqlite", env={"MY_SETTING": "x"}) as host:
        r = requests.post(host.url("/api/orchestrators/hello"))
        wait_for_instance(r.json()["statusQueryGetUri"])
        requests.get(host.url("/admin/host/status"), headers=host.headers)  # master key
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from fedfunc.host.engine import TERMINAL
from fedfunc.host.keys import MASTER_KEY_SETTING, read_keys
from fedfunc.host.runtime import default_keys_path


class HostProcess:
    def __init__(self, app_dir: Path, state: Path, port: int | None = None, env: dict | None = None,
                 args: tuple[str, ...] = ()):
        """`port` None: the host binds a free one on first start and keeps it across restarts."""
        self.app_dir, self.state = Path(app_dir), Path(state)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        repo = str(Path(__file__).resolve().parents[2])  # `python -m fedfunc` works uninstalled too
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, self.env.get("PYTHONPATH")) if p)
        self.args = args
        self.log_path = self.state.with_suffix(".log")
        self.ready_path = self.state.with_suffix(".ready.json")
        self.keys_path = default_keys_path(self.state)
        self.proc: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        if self.port is None:
            raise RuntimeError("the host has not started yet: its port is not known")
        return f"http://127.0.0.1:{self.port}"

    @property
    def keys(self) -> dict:
        """The host's keys file (master, function, system and topic keys)."""
        return read_keys(self.keys_path)

    @property
    def master_key(self) -> str:
        return self.env.get(MASTER_KEY_SETTING) or self.keys["masterKey"]

    @property
    def headers(self) -> dict:
        """Headers that open every host route (the master key)."""
        return {"x-functions-key": self.master_key}

    def url(self, path: str) -> str:
        return self.origin + path

    def start(self, timeout: float = 30.0) -> "HostProcess":
        self.state.parent.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fedfunc", "host", str(self.app_dir), "--port", str(self.port or 0),
             "--state", str(self.state), "--ready-file", str(self.ready_path), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fedfunc host exited with {self.proc.returncode}:\n{self.log()}")
            ready = self._ready()
            if ready:
                self.port = ready["port"]
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"fedfunc host not ready within {timeout:.0f}s:\n{self.log()}")

    def _ready(self) -> dict | None:
        try:
            ready = json.loads(self.ready_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return ready if ready.get("pid") == self.proc.pid else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """`kill -9`: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a graceful stop; SIGINT may be inherited ignored
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "HostProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_instance(status_url: str, statuses=TERMINAL, timeout: float = 30.0, headers: dict | None = None) -> dict:
    """Poll a check-status URL until the instance reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        response = requests.get(status_url, headers=headers, timeout=5)
        if response.status_code in (200, 202):
            body = response.json()
            if body.get("runtimeStatus") in statuses:
                return body
        time.sleep(0.05)
    raise TimeoutError(f"instance not in {statuses} after {timeout}s; last status {body}")


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s")
