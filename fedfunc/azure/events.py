"""Azure ML job status events → the round's ``failed:{silo}`` event, so a broken silo ends its wait at once.

The workspace's Event Grid system topic sends ``RunStatusChanged`` (filtered to Failed / Canceled in
infra/main.bicep) to the ``on_job_status`` function, which calls ``job_failure`` and raises the result.
Only jobs this app submitted count: the tags must name a (run, round, silo) whose deterministic job
name is the event's run id, so a job someone else tagged cannot fail a silo.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from fedfunc import protocol
from fedfunc.azure.naming import job_name
from fedfunc.backends.aml import TAG_ROUND, TAG_RUN, TAG_SILO

RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
FAILED_STATES = {"failed", "canceled", "cancelled"}


class RoundEvent(NamedTuple):
    instance_id: str
    name: str
    payload: dict


def _get(data: Mapping, key: str):
    """Event Grid payload keys: AML sends camelCase (``runStatus``), filters document ``RunStatus``."""
    return next((v for k, v in data.items() if k.lower() == key.lower()), None)


def job_failure(event_type: str, data: Mapping) -> RoundEvent | None:
    """``(round instance id, "failed:{silo}", {"reason"})`` for a failed/canceled job of ours, else None."""
    if event_type != RUN_STATUS_CHANGED:
        return None
    status = str(_get(data, "runStatus") or "")
    tags = _get(data, "runTags") or {}
    run, round_, silo, run_id = tags.get(TAG_RUN), tags.get(TAG_ROUND), tags.get(TAG_SILO), _get(data, "runId")
    if status.lower() not in FAILED_STATES or not (run and silo and str(round_ or "").isdigit()):
        return None
    if run_id != job_name(run, int(round_), silo):
        return None
    return RoundEvent(protocol.round_instance_id(run, int(round_)), protocol.failed_event(silo),
                      {"reason": f"Azure ML job {run_id} {status.lower()} (see the job's logs in Azure ML studio)"})
