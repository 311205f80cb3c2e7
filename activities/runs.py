"""The activities of a federated run."""
from __future__ import annotations

import azure.durable_functions as df

from datetime import datetime, timedelta, timezone

from fedfunc import layout
from fedfunc.coordinator import rounds
from fedfunc.coordinator.services import services
from fedfunc.report import build_report, render_png
from fedfunc.security.tickets import issue_ticket
from fedfunc.spec import RunSpec

bp = df.Blueprint()
TICKET_GRACE = timedelta(minutes=10)  # a job started just before the deadline may still finish


@bp.activity_trigger(input_name="job")
def init_run(job: dict) -> dict:
    return rounds.init_run(services().store, job["run_id"], RunSpec.model_validate(job["spec"]))


@bp.activity_trigger(input_name="job")
def prepare_round(job: dict) -> dict:
    ready = [r.name for r in services().registry.list(status="ready")]
    return rounds.prepare_round(services().store, ready, job)


@bp.activity_trigger(input_name="job")
def start_silo_job(job: dict) -> dict:
    """Issue the silo's job ticket (valid until the round deadline) and submit its job."""
    svc = services()
    spec = RunSpec.model_validate(job["spec"])
    ticket = issue_ticket(svc.ticket_key, run=job["run_id"], round=job["round"], silo=job["silo"],
                          code_hash=(spec.bundle or {}).get("code_hash", ""), nonce=job["nonce"],
                          ttl=_utc(job["deadline"]) - datetime.now(timezone.utc) + TICKET_GRACE)
    return rounds.start_silo_job(svc.backend, rounds.silo_job_request(svc.store, job, job["silo"], ticket))


def _utc(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@bp.activity_trigger(input_name="job")
def aggregate(job: dict) -> dict:
    svc = services()
    return rounds.aggregate_round(svc.store, svc.read_update, job, job["updates"])


@bp.activity_trigger(input_name="job")
def evaluate(job: dict) -> dict:
    return rounds.evaluate(services().store, job["task"], job["model"])


@bp.activity_trigger(input_name="state")
def write_report(state: dict) -> dict:
    store = services().store
    report = build_report(state, status=state["status"], error=state.get("error"),
                          stop_reason=state.get("stop_reason"))
    paths = {"json": layout.report(state["run_id"], "json"), "png": layout.report(state["run_id"], "png")}
    store.put_json(layout.RUNS, paths["json"], report)
    store.put_bytes(layout.RUNS, paths["png"], render_png(report))
    return {k: f"{layout.RUNS}/{v}" for k, v in paths.items()}
