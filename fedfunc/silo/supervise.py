"""The supervisor's side of a silo job: how a job's process ends, and speaking for a job that could not.

Every silo job runs under a supervisor (``fedfunc silo-job`` on AML, a forked supervisor in the local
worker pool). If the job process dies without reporting (segfault, OOM kill, a deadline), the
supervisor publishes ``failed.json`` for it, so the orchestrator always hears back — but only for a job
the orchestrator ticketed: a forged job never speaks for a round.
"""
from __future__ import annotations

import signal

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
    report_failure(io.outbox, layout.outbox_prefix(request.run_id, request.round, request.silo), reason, None)
