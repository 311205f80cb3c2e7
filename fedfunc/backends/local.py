"""Silo jobs as local processes: ``fedfunc silo-job`` per job, detached, with only its silo's home.

The process gets a minimal environment (no orchestrator settings, no other silo's credentials) and
its own session, so it survives a restart of the host the way a cloud job would. One job per
(run, round, silo): a marker file created with O_EXCL makes a repeated submit return the same job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fedfunc.contracts import SiloJobRequest
from fedfunc.silo.home import HOME_ENV, silo_home

_PASSTHROUGH = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ")
REPO_ROOT = Path(__file__).resolve().parents[2]


class LocalProcessBackend:
    def __init__(self, home_root: Path):
        self.home_root = Path(home_root)
        self.jobs = self.home_root / "jobs"

    def _paths(self, job_key: str) -> tuple[Path, Path, Path]:
        return self.jobs / f"{job_key}.request.json", self.jobs / f"{job_key}.pid", self.jobs / f"{job_key}.log"

    def _environment(self, silo: str) -> dict[str, str]:
        home = silo_home(self.home_root, silo)
        env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.update(HOME=str(home), **{HOME_ENV: str(home.resolve())})
        return env

    def submit(self, request: SiloJobRequest) -> str:
        """Start the job unless this (run, round, silo) was already submitted; returns the job id (its key)."""
        job_id = request.job_key
        request_file, pid_file, log_file = self._paths(job_id)
        home = silo_home(self.home_root, request.silo)
        if not (home / "credentials.json").is_file():
            raise FileNotFoundError(f"silo {request.silo!r} has no home at {home}; onboard it first")
        self.jobs.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(request_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return job_id
        with os.fdopen(fd, "w") as f:
            f.write(request.model_dump_json())
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedfunc", "silo-job", "--request", str(request_file.resolve())],
                env=self._environment(request.silo), cwd=home, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        pid_file.write_text(json.dumps({"pid": proc.pid}))
        return job_id

    def smoke(self, silo: str, smoke_id: str, timeout: float = 120.0) -> dict:
        """Run the onboarding smoke job as the silo (same minimal environment) and wait for its verdict.

        Returns ``{"ok", "checks"}``; a job that crashes counts as not ok, with its output as the reason.
        """
        home = silo_home(self.home_root, silo)
        proc = subprocess.run([sys.executable, "-m", "fedfunc", "silo-smoke", "--id", smoke_id],
                              env=self._environment(silo), cwd=home, capture_output=True, text=True,
                              timeout=timeout)
        lines = proc.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            return {"ok": False, "checks": {}, "reason": (proc.stderr or proc.stdout).strip()[-2000:]}

    def cancel(self, job_id: str) -> None:
        """Kill the job's process group if it is still this job's (the pid may have been reused)."""
        request_file, pid_file, _ = self._paths(job_id)
        if not pid_file.is_file():
            return
        pid = json.loads(pid_file.read_text())["pid"]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if str(request_file.resolve()).encode() not in cmdline:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def pid(self, job_id: str) -> int | None:
        """The supervisor's pid (also its process group id), if the job was started."""
        _, pid_file, _ = self._paths(job_id)
        return json.loads(pid_file.read_text())["pid"] if pid_file.is_file() else None
