"""Silo jobs on local compute: the warm worker pool of a local home (``fedfunc.silo.pool``).

Submitting writes the job's request to ``jobs/{job}.request.json`` — created with O_EXCL, so a
repeated submit of the same (run, round, silo) returns the same job — and hands its key to the pool
over the pool's Unix socket, starting the pool first if none serves the home. The pool runs with a
minimal environment (no orchestrator setting, no silo's credentials) in a session of its own, so its
jobs survive a restart of the host the way cloud jobs would.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedfunc.contracts import SiloJobRequest
from fedfunc.silo.home import PASSTHROUGH, REPO_ROOT, job_environment, silo_home
from fedfunc.silo.pool import LOG, SOCKET, start_time

IDLE_S = 120.0           # an idle pool ends after this long, like an AML cluster scaling down to zero
START_TIMEOUT = 180.0    # the first submission waits this long for a new pool to import what jobs need
# The pool's own environment: the silo job's, plus one thread per library (a job trains on one core).
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class PoolUnavailable(RuntimeError):
    pass


class LocalProcessBackend:
    """``SiloJobBackend`` over the local home's worker pool; ``workers`` sizes a pool this backend starts."""

    def __init__(self, home_root: Path, workers: int | None = None, idle_s: float = IDLE_S):
        self.home_root = Path(home_root)
        self.jobs = self.home_root / "jobs"
        self.workers = workers or os.cpu_count() or 1
        self.idle_s = idle_s

    def _paths(self, job_key: str) -> tuple[Path, Path]:
        return self.jobs / f"{job_key}.request.json", self.jobs / f"{job_key}.pid"

    def _environment(self, silo: str) -> dict[str, str]:
        return job_environment(self.home_root, silo, dict(os.environ))

    # ---- the pool ----------------------------------------------------------------------------------
    @property
    def socket_path(self) -> Path:
        return self.jobs.resolve() / SOCKET

    def _ask(self, message: dict, *, start: bool = True, timeout: float = 60.0) -> dict | None:
        """One request to the pool and its answer; the pool is started if it is not running (``start``)."""
        deadline = time.monotonic() + START_TIMEOUT + timeout
        spawned = 0.0
        while True:
            answer, sent = b"", False
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(START_TIMEOUT + timeout)
                    conn.connect(str(self.socket_path))
                    conn.sendall(json.dumps(message).encode() + b"\n")
                    sent = True
                    while not answer.endswith(b"\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        answer += chunk
            except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                pass  # no pool, or one that is stopping: start (another) one
            if answer:
                return json.loads(answer)
            if sent and message["op"] == "smoke":
                return None  # the smoke job ended without a verdict (other requests are safe to repeat)
            if not start:
                return None
            if time.monotonic() > deadline:
                raise PoolUnavailable(f"no silo worker pool answers at {self.socket_path}; see {self.jobs / LOG}")
            if time.monotonic() - spawned > 5:
                self._spawn()
                spawned = time.monotonic()
            time.sleep(0.02)

    def _spawn(self) -> None:
        """Start a pool (one that finds another already serving the home exits at once)."""
        self.jobs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.jobs, 0o700)
        env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.update(_ONE_THREAD)
        with open(self.jobs / LOG, "ab") as log:
            subprocess.Popen([sys.executable, "-m", "fedfunc", "silo-pool", "--home", str(self.home_root.resolve()),
                              "--workers", str(self.workers), "--idle", str(self.idle_s)],
                             env=env, cwd=self.jobs, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)

    def status(self) -> dict | None:
        """The pool's workers, running and queued jobs; None if no pool is running."""
        return self._ask({"op": "status"}, start=False)

    def stop_pool(self) -> None:
        """Stop the pool if one runs (running jobs finish; queued ones wait on disk for the next pool)."""
        self._ask({"op": "stop"}, start=False)

    # ---- SiloJobBackend ------------------------------------------------------------------------------
    def submit(self, request: SiloJobRequest) -> str:
        """Queue the job unless this (run, round, silo) was already submitted; returns the job id (its key).
        Returns once the pool holds the job: started (``pid`` names it) or waiting for a free worker."""
        job_id = request.job_key
        request_file, _ = self._paths(job_id)
        home = silo_home(self.home_root, request.silo)
        if not (home / "credentials.json").is_file():
            raise FileNotFoundError(f"silo {request.silo!r} has no home at {home}; onboard it first")
        self.jobs.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(request_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = None
        if fd is not None:
            with os.fdopen(fd, "w") as f:
                f.write(request.model_dump_json())
        answer = self._ask({"op": "submit", "job": job_id})
        if "error" in answer:
            raise RuntimeError(f"silo worker pool refused job {job_id}: {answer['error']}")
        return job_id

    def smoke(self, silo: str, smoke_id: str, timeout: float = 120.0) -> dict:
        """Run the onboarding smoke job as the silo on the pool and wait for its verdict ``{"ok", "checks"}``;
        a smoke job that ends without one counts as not ok."""
        try:
            verdict = self._ask({"op": "smoke", "silo": silo, "id": smoke_id}, timeout=timeout)
        except (OSError, ValueError) as e:
            verdict = {"reason": f"{type(e).__name__}: {e}"}
        if not verdict or "ok" not in verdict:
            return {"ok": False, "checks": {}, "reason": "the smoke job ended without a verdict "
                    f"({(verdict or {}).get('reason', 'see the pool log')}; {self.jobs / LOG})"}
        return verdict

    def cancel(self, job_id: str) -> None:
        """Drop the job if it waits, kill its process group if it runs; unknown or finished jobs are ignored.
        Without a pool, the job's group is killed if the pid file still names the same process."""
        if self._ask({"op": "cancel", "job": job_id}, start=False) is not None:
            return
        _, pid_file = self._paths(job_id)
        if not pid_file.is_file():
            return
        started = json.loads(pid_file.read_text())
        pid = started.get("pid")
        if pid and start_time(pid) == started.get("start"):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def pid(self, job_id: str) -> int | None:
        """The job's supervisor pid (also its process group id), once the job started."""
        _, pid_file = self._paths(job_id)
        return json.loads(pid_file.read_text()).get("pid") if pid_file.is_file() else None
