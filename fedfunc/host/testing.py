"""Run `fedfunc host` in a subprocess for tests and demos: a free port, a readiness wait,
`kill -9` and restart on the same state.

    with HostProcess(app_dir, state=tmp / "state.sqlite", env={"MY_SETTING": "x"}) as host:
        r = requests.post(host.url("/api/orchestrators/hello"))
        wait_for_instance(r.json()["statusQueryGetUri"])
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from fedfunc.host.engine import TERMINAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostProcess:
    def __init__(self, app_dir: Path, state: Path, port: int | None = None, env: dict | None = None,
                 args: tuple[str, ...] = ()):
        self.app_dir, self.state = Path(app_dir), Path(state)
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        repo = str(Path(__file__).resolve().parents[2])  # `python -m fedfunc` works uninstalled too
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, self.env.get("PYTHONPATH")) if p)
        self.args = args
        self.log_path = self.state.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def start(self, timeout: float = 30.0) -> "HostProcess":
        self.state.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fedfunc", "host", str(self.app_dir), "--port", str(self.port),
             "--state", str(self.state), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fedfunc host exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url("/admin/host/status"), timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"fedfunc host not ready within {timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """`kill -9`: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
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
