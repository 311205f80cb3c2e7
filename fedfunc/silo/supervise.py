"""The supervisor's side of a silo job: how a job's process ends, and speaking for a job that could not.

Every silo job runs under a supervisor (``fedfunc silo-job`` on AML, a forked supervisor in the local
worker pool). If the job process dies without reporting (segfault, OOM kill, a deadline), the
supervisor publishes ``failed.json`` for it, so the orchestrator always hears back — but only for a job
the orchestrator ticketed: a forged job never speaks for a round.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timezone

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.security import Refused
from fedfunc.silo.io import SiloIO
from fedfunc.silo.runner import authenticate, report_failure

REPORTED = 3  # the job process ended the job itself (published failed.json, or refused an unauthenticated job)


def crash_reason(returncode: int) -> str:
    """Why a job process that did not report ended, from its exit code (negative: the signal)."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"silo job process was killed by signal {name} (crash or out of memory)"
    return f"silo job process exited with code {returncode} without reporting"


def report_for(request: SiloJobRequest, io: SiloIO, reason: str) -> None:
    """Publish ``failed.json`` for a job that ended without reporting, if the orchestrator ticketed it."""
    try:
        authenticate(request, io)
    except Refused:
        return
    report_failure(io.outbox, layout.outbox_prefix(request.run_id, request.round, request.silo), reason, None,
                   request.mode)


def supervise(request: SiloJobRequest, io: Callable[[], SiloIO], times: dict[str, datetime]) -> int:
    """Run the job in a forked worker, end it at ``request.deadline``, and speak for it if it could not;
    0 if it published its update, 1 otherwise. ``io()`` is called in the worker (where credentials may
    be read) and here only to report for a worker that did not."""
    worker = os.fork()
    if worker == 0:
        os._exit(_work(request, io, times))
    code = _wait(worker, request.deadline)
    if code is None:
        reason = f"silo job passed its deadline {request.deadline.isoformat()} and was stopped"
    elif code in (0, REPORTED):
        return 0 if code == 0 else 1
    else:
        reason = crash_reason(code)
    report_for(request, io(), reason)
    return 1


def _wait(pid: int, deadline: datetime | None) -> int | None:
    """The worker's exit code, or None once it was killed at ``deadline``."""
    fd = os.pidfd_open(pid)
    try:
        timeout = None if deadline is None else max(0.0, (deadline - datetime.now(timezone.utc)).total_seconds())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) if ready else None
    finally:
        os.close(fd)


def _work(request: SiloJobRequest, io: Callable[[], SiloIO], times: dict[str, datetime]) -> int:
    from fedfunc.silo.runner import JobFailed, run_job

    code = 1
    try:
        run_job(request, io(), times=times)
        print(f"silo job {request.job_key}: update published")
        code = 0
    except JobFailed as e:
        print(f"silo job {request.job_key} failed: {e.reason}", file=sys.stderr)
        code = REPORTED
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    return code
