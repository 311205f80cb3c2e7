"""A silo's long-lived job for a whole run (``fedfunc silo-serve``): the warm option on Azure ML.

Instead of one AML job per round (each paying the job's start), the silo runs one job per run on its own
compute with its own identity. It imports what jobs need once (``fedfunc.silo.pool.warm``) and then takes
the run's rounds as requests from its inbox — ``{run}/{silo}/round-NNNN.json`` in the orchestrator's
``inbox`` container, written there by ``fedfunc.backends.aml_run_job`` — in round order. Each request is
run exactly as a per-round job is: a forked worker runs ``run_job`` (ticket, policy, signed bundle,
installed code, the model's pinned sha256, egress) under the same supervisor (deadline, crash report,
``fedfunc.silo.supervise``). A request already answered in the outbox (update or failure note) is
skipped, so a restarted job picks up where the last one stopped. The job ends after ``idle_s`` without
a new request, or when the orchestrator cancels it.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Protocol

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.silo.io import SiloIO
from fedfunc.silo.runner import final_artifact

REQUEST_NAME = re.compile(r"^round-(\d{4,})\.json$")


class Inbox(Protocol):
    def names(self) -> Iterable[str]:
        """The request blobs' names below this silo's inbox prefix (``round-NNNN.json``)."""

    def read(self, name: str) -> bytes: ...


class BlobInbox:
    """The silo's inbox prefix in the orchestrator's ``inbox`` container (read with the job's identity)."""

    def __init__(self, container, prefix: str):
        self.container, self.prefix = container, prefix

    def names(self) -> list[str]:
        return [b.name[len(self.prefix):] for b in self.container.list_blobs(name_starts_with=self.prefix)]

    def read(self, name: str) -> bytes:
        return self.container.download_blob(self.prefix + name).readall()


def inbox_prefix(run: str, silo: str) -> str:
    return f"{run}/{silo}/"


def request_name(round_: int) -> str:
    return f"round-{round_:04d}.json"


def _answered(io: SiloIO, request: SiloJobRequest) -> bool:
    prefix = layout.outbox_prefix(request.run_id, request.round, request.silo)
    return any(io.outbox.read(prefix + name) is not None for name in (final_artifact(request.mode), layout.FAILED))


def serve(inbox: Inbox, io: Callable[[], SiloIO], *, run: str, silo: str, poll_s: float = 1.0,
          idle_s: float = 600.0) -> list[str]:
    """Run this silo's requests of ``run`` as they arrive, in round order; returns the jobs it ran."""
    from fedfunc.silo.pool import warm
    from fedfunc.silo.supervise import supervise

    warm()
    done: set[str] = set()
    ran: list[str] = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        new = sorted((int(m.group(1)), name) for name in inbox.names()
                     if (m := REQUEST_NAME.match(name)) and name not in done)
        for _, name in new:
            done.add(name)
            request = SiloJobRequest.model_validate_json(inbox.read(name))
            if (request.run_id, request.silo) != (run, silo) or _answered(io(), request):
                continue  # not this job's to run (the ticket would refuse it too), or already answered
            supervise(request, io, {"started": datetime.now(timezone.utc)})
            ran.append(request.job_key)
            last = time.monotonic()
        if not new:
            time.sleep(poll_s)
    return ran
