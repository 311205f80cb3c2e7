"""The activities of a federated run: typed messages in, ``fedfunc.coordinator.rounds`` steps, messages out."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import azure.durable_functions as df

from fedfunc import layout
from fedfunc import protocol as p
from fedfunc.coordinator import rounds
from fedfunc.coordinator.services import services
from fedfunc.report import build_report, render_html, render_png
from fedfunc.security.audit import entry
from fedfunc.security.tickets import issue_ticket

bp = df.Blueprint()
TICKET_GRACE = timedelta(minutes=10)  # a job started just before the deadline may still finish
SUBMITTERS = 8  # jobs handed to the backend at once (an AML submission is a round trip of seconds)


@bp.function_name(p.INIT_RUN)
@bp.activity_trigger(input_name="state")
def init_run(state: dict) -> dict:
    return rounds.init_run(services().store, p.RunState.model_validate(state)).wire()


@bp.function_name(p.PREPARE_ROUND)
@bp.activity_trigger(input_name="job")
def prepare_round(job: dict) -> dict:
    ready = services().registry.list(status="ready")
    caps = {r.name: r.max_samples for r in ready if r.max_samples is not None}
    return rounds.prepare_round(services().store, [r.name for r in ready], p.RoundJob.model_validate(job),
                                sample_caps=caps).wire()


@bp.function_name(p.START_SILO_JOBS)
@bp.activity_trigger(input_name="order")
def start_silo_jobs(order: dict) -> list[dict]:
    """Issue each silo's job ticket (valid until the round deadline, bound to the global model) and submit
    the jobs, ``SUBMITTERS`` at a time; then record every ticket and submission in the audit log at once
    (after the submissions, so jobs start sooner; a retried activity records the tickets it issued then,
    under the same entry ids). One activity for the round's jobs: one dispatch and one history entry, not
    one per silo."""
    svc = services()
    order = p.SiloJobsOrder.model_validate(order)
    job = order.job
    code_hash = job.spec.bundle or ""
    expires = job.deadline + TICKET_GRACE

    def start(silo: str, mode: p.JobMode) -> tuple[p.SiloJobStarted, list]:
        request = rounds.silo_job_request(svc.store, job, silo, mode, None)
        ticket = issue_ticket(svc.ticket_key, run=job.run_id, round=job.round, silo=silo, code_hash=code_hash,
                              nonce=job.nonce, model_url=request.model_url, model_sha256=request.model_sha256,
                              ttl=expires - datetime.now(timezone.utc))
        started = rounds.start_silo_job(svc.backend, request.model_copy(update={"ticket": ticket}))
        where = dict(run=job.run_id, round=job.round, silo=silo)
        return started, [entry("ticket_issued", **where, event_id=f"ticket:{job.run_id}:{job.round}:{silo}",
                               code_hash=code_hash, model_sha256=request.model_sha256, expires_at=expires.isoformat()),
                         entry("job_submitted", **where, event_id=f"job:{job.run_id}:{job.round}:{silo}",
                               job_id=started.job_id, error=started.error)]

    with ThreadPoolExecutor(max(1, min(SUBMITTERS, len(order.modes)))) as pool:
        done = list(pool.map(start, order.modes, order.modes.values()))
    svc.audit.record_many([e for _, entries in done for e in entries])
    return [started.wire() for started, _ in done]


@bp.function_name(p.AGGREGATE)
@bp.activity_trigger(input_name="order")
def aggregate(order: dict) -> dict:
    svc = services()
    order = p.AggregateOrder.model_validate(order)
    outboxes = svc.outbox_access()
    result = rounds.aggregate_round(svc.store, outboxes.read, outboxes.open, order)
    run, round_ = order.job.run_id, order.job.round
    svc.audit.record_many(
        [entry("artifact_received", run=run, round=round_, silo=silo, event_id=f"received:{run}:{round_}:{silo}",
               sha256=got.sha256, version=got.version, path=got.path) for silo, got in result.received.items()]
        + [entry("update_rejected", run=run, round=round_, silo=r.silo, event_id=f"rejected:{run}:{round_}:{r.silo}",
                 reason=r.reason) for r in result.rejected])
    return result.wire()


@bp.function_name(p.POOL_EVALUATIONS)
@bp.activity_trigger(input_name="order")
def pool_evaluations(order: dict) -> dict:
    svc = services()
    order = p.EvaluationOrder.model_validate(order)
    result = rounds.pool_evaluations(svc.store, svc.outbox_reader(), order)
    run, round_ = order.job.run_id, order.job.round
    for r in result.rejected:
        svc.audit.record("evaluation_rejected", run=run, round=round_, silo=r.silo,
                         event_id=f"evaluation-rejected:{run}:{round_}:{r.silo}", reason=r.reason)
    return result.wire()


@bp.function_name(p.WRITE_REPORT)
@bp.activity_trigger(input_name="outcome")
def write_report(outcome: dict) -> dict:
    outcome = p.RunOutcome.model_validate(outcome)
    store = services().store
    report = build_report(outcome.wire(), status=outcome.status, error=outcome.error, stop_reason=outcome.stop_reason,
                          final_evaluation=rounds.final_evaluation(store, outcome))
    paths = {ext: layout.report(outcome.run_id, ext) for ext in ("json", "png", "html")}
    store.put_json(layout.RUNS, paths["json"], report)
    store.put_bytes(layout.RUNS, paths["png"], render_png(report))
    store.put_bytes(layout.RUNS, paths["html"], render_html(report).encode())
    return {k: f"{layout.RUNS}/{v}" for k, v in paths.items()}
