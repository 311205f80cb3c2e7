"""The warm worker pool local silo jobs start from, the way a job starts on an AML cluster whose nodes are up.

One long-lived parent per local home (``fedfunc silo-pool``) imports what every job needs — torch, the
job runner, the storage SDK, the compiled egress kernels — once. Each job is a fork of it:

    pool (no silo's identity, no credentials)
     └─ supervisor: own session; drops to the silo's identity (only its home, its environment, its
        folder) before anything reads credentials or runs task code; ends the job at its deadline
         └─ worker: ``fedfunc.silo.runner.run_job`` — ticket, policy, signed bundle, code hashes,
            egress: every check of a job, for every job

At most ``workers`` jobs run at once (default: the number of cores) whatever the number of silos;
the rest wait in arrival order, and a job whose deadline passes while it waits is not started but
reported failed. A worker that dies is reported by its supervisor (``fedfunc.silo.supervise``); a
supervisor that dies is reported by a fresh one; the next job forks from the warm parent again.

The backend (``fedfunc.backends.local``) writes each request to ``jobs/{job}.request.json`` and sends
the job's key over the pool's Unix socket (``jobs/pool.sock``, mode 0600); ``jobs/{job}.pid`` is
written when the job starts. A pool that stops leaves queued requests on disk; the next one
takes them up. An idle pool ends after ``idle_s``; the next submission starts a new one.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import selectors
import signal
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fedfunc.contracts import SiloJobRequest
from fedfunc.registry import SILO_NAME
from fedfunc.silo.home import job_environment, silo_home

SOCKET, LOCK, LOG = "pool.sock", "pool.lock", "pool.log"
JOB_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
MAX_MESSAGE = 4096


def _now() -> datetime:
    return datetime.now(timezone.utc)


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with its pid, it names the process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def warm() -> None:
    """Import and exercise the platform every job runs on — torch on one thread (autograd, an optimizer:
    seconds on first use), the storage SDK, the runner, the egress kernels — and no task code: a job
    imports its task only after its checks, as a fresh process would. Only the calling thread runs
    torch, so no thread pool exists that a fork could not inherit."""
    import numpy as np
    import torch
    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use)

    import fedfunc.silo.runner  # noqa: F401
    import fedfunc.silo.smoke  # noqa: F401
    import fedfunc.silo.supervise  # noqa: F401
    from fedfunc import kernels
    from fedfunc.tasks.loader import TASK_PACKAGE_PREFIX

    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    step = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(net(torch.zeros(4, 8)), torch.zeros(4, dtype=torch.long)).backward()
    step.step()
    kernels.sumsq(np.zeros(8, np.float32))
    kernels.sumsq(np.zeros(8, np.float32), np.zeros(8, np.float32))
    imported = sorted(m for m in sys.modules if m.startswith(TASK_PACKAGE_PREFIX))  # the platform's fedfunc.tasks is fine
    if imported:
        raise RuntimeError(f"the worker pool imported task code before any job was checked: {imported}")


@dataclass
class PoolJob:
    key: str
    request: SiloJobRequest
    arrived: datetime
    waited: bool  # every worker was busy when it arrived: its wait is the silo's, not the platform's

    @property
    def expired(self) -> bool:
        return self.request.deadline is not None and _now() >= self.request.deadline


class Pool:
    def __init__(self, home_root: Path, workers: int, idle_s: float):
        self.home_root = Path(home_root).resolve()
        self.jobs = self.home_root / "jobs"
        self.workers, self.idle_s = workers, idle_s
        self.queue: deque[PoolJob] = deque()
        self.running: dict[int, PoolJob] = {}   # supervisor pid → job
        self.helpers: set[int] = set()           # smoke jobs and reporters: reaped, not counted
        self.cancelled: set[str] = set()
        self.idle_since = time.monotonic()
        self.stopping = False

    # ---- the parent's loop ---------------------------------------------------------------------
    def serve(self) -> None:
        """Serve until stopped or idle; returns at once if another pool already serves this home."""
        self.jobs.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.jobs / LOCK, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        path = self.jobs / SOCKET
        path.unlink(missing_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._listener.bind(str(path))
        finally:
            os.umask(old)
        self._listener.listen(256)  # bound before warming up: clients wait instead of starting another pool
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        warm()
        self._recover()
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        print(f"silo pool {os.getpid()}: {self.workers} worker(s) for {self.home_root}", flush=True)
        try:
            while not self.stopping:
                self._reap()
                self._expire()
                self._fill()
                if self.running or self.queue:
                    self.idle_since = time.monotonic()
                elif time.monotonic() - self.idle_since > self.idle_s:
                    break
                for key, _ in sel.select(timeout=0.5):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        os.read(wake_r, 4096)
        finally:
            if path.exists() and path.stat().st_ino == os.fstat(self._listener.fileno()).st_ino:
                path.unlink()
            self._listener.close()
        print(f"silo pool {os.getpid()}: stopped ({len(self.queue)} queued job(s) left for the next pool)", flush=True)

    def _recover(self) -> None:
        """Requests a stopped pool left waiting: written, never started (no pid file)."""
        waiting = [p for p in self.jobs.glob("*.request.json")
                   if not p.with_name(p.name.replace(".request.json", ".pid")).exists()]
        for path in sorted(waiting, key=lambda p: p.stat().st_mtime):
            self._submit(path.name.removesuffix(".request.json"))

    def _accept(self) -> None:
        conn, _ = self._listener.accept()
        try:
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_MESSAGE:
                chunk = conn.recv(MAX_MESSAGE)
                if not chunk:
                    break
                data += chunk
            message = json.loads(data)
            op = message.get("op")
            if op == "smoke":
                self._smoke(conn, str(message.get("silo")), str(message.get("id")))
                return
            answer = {"submit": lambda: self._submit(str(message.get("job"))),
                      "cancel": lambda: self._cancel(str(message.get("job"))),
                      "status": self._status,
                      "stop": self._stop}.get(op, lambda: {"error": f"unknown op {op!r}"})()
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError) as e:
            print(f"silo pool: bad client message: {e}", flush=True)
        finally:
            conn.close()  # a smoke job's child answers on its own copy

    # ---- operations ------------------------------------------------------------------------------
    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.jobs / f"{key}.request.json", self.jobs / f"{key}.pid"

    def _state(self, key: str) -> dict:
        for pid, job in self.running.items():
            if job.key == key:
                return {"state": "running", "pid": pid}
        for position, job in enumerate(self.queue):
            if job.key == key:
                return {"state": "queued", "ahead": position}
        _, pid_file = self._paths(key)
        return {"state": "started", **json.loads(pid_file.read_text())} if pid_file.exists() else {"state": "unknown"}

    def _submit(self, key: str) -> dict:
        if not JOB_KEY.match(key):
            return {"error": f"job: {key[:80]!r} is not a job key"}
        state = self._state(key)
        if state["state"] != "unknown":
            return state
        request_file, _ = self._paths(key)
        try:
            request = SiloJobRequest.model_validate_json(request_file.read_text())
        except (OSError, ValueError) as e:
            return {"error": f"job {key}: unreadable request ({type(e).__name__})"}
        if request.job_key != key or not re.match(SILO_NAME, request.silo):
            return {"error": f"job {key}: the request is for {request.job_key!r}"}
        self.queue.append(PoolJob(key, request, _now(), waited=len(self.running) >= self.workers))
        self._fill()
        return self._state(key)

    def _cancel(self, key: str) -> dict:
        for job in list(self.queue):
            if job.key == key:
                self.queue.remove(job)
                self._mark(key, cancelled=True)
                return {"state": "cancelled"}
        for pid, job in self.running.items():
            if job.key == key:
                self.cancelled.add(key)
                _kill_group(pid)
                return {"state": "cancelled"}
        return self._state(key)

    def _status(self) -> dict:
        return {"pid": os.getpid(), "workers": self.workers, "running": sorted(j.key for j in self.running.values()),
                "queued": [j.key for j in self.queue]}

    def _stop(self) -> dict:
        self.stopping = True
        return {"state": "stopping"}

    def _mark(self, key: str, **fields) -> None:
        _, pid_file = self._paths(key)
        tmp = pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(fields))
        tmp.replace(pid_file)

    # ---- scheduling ------------------------------------------------------------------------------
    def _fill(self) -> None:
        while self.queue and len(self.running) < self.workers:
            job = self.queue.popleft()
            pid = self._fork(lambda: _supervise(self.home_root, job))
            self.running[pid] = job
            self._mark(job.key, pid=pid, start=start_time(pid))

    def _expire(self) -> None:
        """Queued jobs whose deadline passed are not started; a short-lived child reports them."""
        for job in [j for j in self.queue if j.expired]:
            self.queue.remove(job)
            reason = f"the job's deadline {job.request.deadline.isoformat()} passed before a worker was free"
            pid = self._fork(lambda: _report(self.home_root, job.request, reason))
            self.helpers.add(pid)
            self._mark(job.key, pid=pid, start=start_time(pid), expired=True)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.helpers.discard(pid)
            job = self.running.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            if job is None or job.key in self.cancelled or code in (0, 1):
                continue
            # The supervisor itself died: end what is left of the job, and report it from a fresh child.
            _kill_group(pid)
            from fedfunc.silo.supervise import crash_reason
            self.helpers.add(self._fork(lambda: _report(self.home_root, job.request,
                                                        "silo job supervisor: " + crash_reason(code))))

    def _smoke(self, conn: socket.socket, silo: str, smoke_id: str) -> None:
        """Run the onboarding smoke job as the silo; the child answers on ``conn`` itself."""
        if not re.match(SILO_NAME, silo):
            conn.sendall(json.dumps({"ok": False, "checks": {}, "reason": f"silo: {silo[:40]!r}"}).encode() + b"\n")
            return
        self.helpers.add(self._fork(lambda: _smoke(self.home_root, silo, smoke_id, conn.fileno()),
                                    keep_fd=conn.fileno()))

    def _fork(self, child, keep_fd: int | None = None) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                _close_fds_except(keep_fd)
                code = child()
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        return pid


def _close_fds_except(keep: int | None) -> None:
    """The pool's socket, lock and wake-up pipe stay with the pool (a job holding the lock would keep
    a new pool from starting); stdin, stdout and stderr stay."""
    top = os.sysconf("SC_OPEN_MAX")
    if keep is None:
        os.closerange(3, top)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, top)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---- in the children ---------------------------------------------------------------------------------
def _become(home_root: Path, silo: str, log: Path | None) -> Path:
    """Drop to the silo's identity: a session of its own, only its home's environment, its home as the
    working folder, private files; output to the job's log. Nothing before this reads a credential."""
    os.setsid()
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    env = job_environment(home_root, silo, dict(os.environ))
    os.environ.clear()
    os.environ.update(env)
    home = silo_home(home_root, silo)
    os.chdir(home)
    os.umask(0o077)
    return home


def _supervise(home_root: Path, job: PoolJob) -> int:
    """The job's supervisor: as the silo, run the worker, end it at the deadline, report it if it could not."""
    from fedfunc.silo.io import BlobSiloIO
    from fedfunc.silo.supervise import supervise

    started = _now()
    home = _become(home_root, job.request.silo, home_root / "jobs" / f"{job.key}.log")
    times = {"started": started, **({"queued": job.arrived} if job.waited else {})}
    return supervise(job.request, lambda: BlobSiloIO.from_home(home), times)


def _report(home_root: Path, request: SiloJobRequest, reason: str) -> int:
    from fedfunc.silo.io import BlobSiloIO
    from fedfunc.silo.supervise import report_for

    home = _become(home_root, request.silo, home_root / "jobs" / f"{request.job_key}.log")
    print(f"silo job {request.job_key}: {reason}", file=sys.stderr)
    report_for(request, BlobSiloIO.from_home(home), reason)
    return 1


def _smoke(home_root: Path, silo: str, smoke_id: str, conn_fd: int) -> int:
    from fedfunc.silo.home import read_credentials
    from fedfunc.silo.smoke import run_smoke

    conn = socket.socket(fileno=conn_fd)
    conn.setblocking(True)
    home = _become(home_root, silo, None)
    try:
        result = run_smoke(read_credentials(home), smoke_id)
    except Exception as e:
        result = {"ok": False, "checks": {}, "reason": f"{type(e).__name__}: {e}"}
    conn.sendall(json.dumps(result, sort_keys=True).encode() + b"\n")
    conn.close()
    return 0 if result["ok"] else 1


def serve(home_root: Path, workers: int, idle_s: float) -> None:
    Pool(home_root, workers, idle_s).serve()
