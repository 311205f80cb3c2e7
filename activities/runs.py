"""The activities of a federated run."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import azure.durable_functions as df

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
    run, round_, silo = job["run_id"], job["round"], job["silo"]
    code_hash = (spec.bundle or {}).get("code_hash", "")
    expires = _utc(job["deadline"]) + TICKET_GRACE
    ticket = issue_ticket(svc.ticket_key, run=run, round=round_, silo=silo, code_hash=code_hash, nonce=job["nonce"],
                          ttl=expires - datetime.now(timezone.utc))
    svc.audit.record("ticket_issued", run=run, round=round_, silo=silo, event_id=f"ticket:{run}:{round_}:{silo}",
                     code_hash=code_hash, expires_at=expires.isoformat())
    started = rounds.start_silo_job(svc.backend, rounds.silo_job_request(svc.store, job, silo, ticket))
    svc.audit.record("job_submitted", run=run, round=round_, silo=silo, event_id=f"job:{run}:{round_}:{silo}",
                     job_id=started.get("job_id"), error=started.get("error"))
    return started


def _utc(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@bp.activity_trigger(input_name="job")
def aggregate(job: dict) -> dict:
    svc = services()
    result = rounds.aggregate_round(svc.store, svc.outbox_reader(), job, job["updates"])
    run, round_ = job["run_id"], job["round"]
    for silo, got in result["received"].items():
        svc.audit.record("artifact_received", run=run, round=round_, silo=silo,
                         event_id=f"received:{run}:{round_}:{silo}", sha256=got["sha256"], path=got["path"])
    for r in result["rejected"]:
        svc.audit.record("update_rejected", run=run, round=round_, silo=r["silo"],
                         event_id=f"rejected:{run}:{round_}:{r['silo']}", reason=r["reason"])
    return result


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
