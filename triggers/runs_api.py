"""HTTP API for runs: start, list, status (with the per-silo view), cancel. The run page: ``run_page.py``."""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

from fedfunc import protocol as p
from fedfunc.aggregation import UnknownStrategy, get_strategy
from fedfunc.coordinator import rounds
from fedfunc.coordinator.services import services
from fedfunc.observe.silos import silo_rows
from fedfunc.registry import UnknownSilo
from fedfunc.security.bundle import BundleConfig, SignedBundle
from fedfunc.security.update_bound import bundle_bound
from fedfunc.validation import describe
from fedfunc.spec import RunSpec, SpecError, is_run_id, parse_spec
from fedfunc.tasks.registry import UnknownTask, get_task
from triggers.auth import requires
from triggers.http_util import BadRequest, error, json_body, respond
from triggers.observe import tell

bp = df.Blueprint()
log = logging.getLogger("fedfunc.runs")


def validate_run_request(body: object) -> tuple[str, RunSpec]:
    """The run id (given or new) and the spec; errors name the field, task, silo or aggregator."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: a run spec, optionally with \"run_id\"")
    body = dict(body)
    run_id = body.pop("run_id", None) or f"run-{uuid.uuid4().hex[:12]}"
    if not is_run_id(run_id):
        raise BadRequest("run_id: 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
    try:
        spec = parse_spec(body)
        get_task(spec.task)
        get_strategy(spec.aggregator)
    except (SpecError, UnknownTask, UnknownStrategy) as e:
        raise BadRequest(str(e)) from None
    spec = _with_signed_hyperparams(spec)
    try:
        bundle_bound(spec.bundle)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    if isinstance(spec.silos, list):
        for silo in spec.silos:
            try:
                services().registry.get(silo)
            except UnknownSilo as e:
                raise BadRequest(f"silos: {e}") from None
    return run_id, spec


def _with_signed_hyperparams(spec: RunSpec) -> RunSpec:
    """Silos train only with the signed config, so a spec that asks otherwise is refused here, early."""
    if spec.bundle is None:
        raise BadRequest("bundle: a run needs a code bundle signed by a scientist (`fedfunc sign`); "
                         "silos refuse unsigned code")
    try:
        signed = SignedBundle.model_validate(spec.bundle)
    except ValueError as e:
        raise BadRequest(f"bundle: not a signed bundle ({e.__class__.__name__})") from None
    if signed.bundle.task != spec.task:
        raise BadRequest(f"bundle: signed for task {signed.bundle.task!r}, the spec asks for {spec.task!r}")
    try:
        hyperparams = BundleConfig.model_validate(signed.bundle.config).hyperparams
    except ValidationError as e:
        raise BadRequest(f"bundle: config: {describe(e)}") from None
    if spec.hyperparams is not None and spec.hyperparams != hyperparams:
        raise BadRequest(f"hyperparams: {spec.hyperparams.model_dump()} differ from the signed bundle's "
                         f"{hyperparams.model_dump()}")
    return spec.model_copy(update={"hyperparams": hyperparams})


async def start_training(client: df.DurableOrchestrationClient, run_id: str, spec: RunSpec) -> str:
    return await client.start_new(p.TRAINING, run_id, p.RunState(run_id=run_id, spec=spec).wire())


@bp.route(route="runs", methods=["POST"])
@bp.durable_client_input(client_name="client")
@requires("scientist", "admin")
async def start_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        run_id, spec = validate_run_request(json_body(req))
    except BadRequest as e:
        return error(400, str(e))
    existing = await client.get_status(run_id)
    if existing and existing.runtime_status is not None:
        return error(409, f"run {run_id!r} already exists ({existing.runtime_status.value})")
    await start_training(client, run_id, spec)
    links = json.loads(client.create_check_status_response(req, run_id).get_body())
    return respond(202, {"run": run_id, "status": f"/api/runs/{run_id}", "durable": links},
                   headers={"Location": f"/api/runs/{run_id}"})


def _run_view(status: df.DurableOrchestrationStatus) -> dict:
    custom = status.custom_status or {}
    return {
        "run": status.instance_id, "runtime_status": status.runtime_status.value if status.runtime_status else None,
        "created": status.created_time, "updated": status.last_updated_time,
        "phase": custom.get("phase"), "round": custom.get("round"), "rounds": custom.get("rounds"),
        "metrics": custom.get("metrics"), "error": _error(status),
    }


def _error(status: df.DurableOrchestrationStatus) -> str | None:
    """Why a run failed: the orchestration's failure output (the round's reason is in it)."""
    if status.runtime_status and status.runtime_status.value == "Failed":
        return str(status.output)
    return (status.custom_status or {}).get("error")


@bp.route(route="runs", methods=["GET"])
@bp.durable_client_input(client_name="client")
@requires("scientist", "admin")
async def list_runs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    runs = [s for s in await client.get_status_all() if s.name == p.TRAINING]
    return respond(200, {"runs": [_run_view(s) for s in sorted(runs, key=lambda s: str(s.created_time))]})


async def find_run(client: df.DurableOrchestrationClient, run_id: str) -> df.DurableOrchestrationStatus | None:
    if not is_run_id(run_id):  # not a name any run can have: looked up nowhere
        return None
    status = await client.get_status(run_id)
    if not status or status.runtime_status is None or status.name != p.TRAINING:
        return None
    return status


async def _current_round(client: df.DurableOrchestrationClient, run: df.DurableOrchestrationStatus):
    """The round sub-orchestration a running run is in, if it is still running."""
    round_ = (run.custom_status or {}).get("round")
    if run.runtime_status.value not in ("Running", "Pending") or round_ is None:
        return None
    status = await client.get_status(p.round_instance_id(run.instance_id, round_))
    if not status or not status.runtime_status or status.runtime_status.value != "Running":
        return None
    return status


async def run_detail(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> dict:
    """A run's state, its completed rounds (from its round record), the round in progress and one row per silo."""
    custom = status.custom_status or {}
    view = {**_run_view(status), "history": rounds.round_results(services().store, status.instance_id),
            "report": custom.get("report"), "output": status.output, "current_round": None}
    round_status = await _current_round(client, status)
    if round_status:
        view["current_round"] = {"runtime_status": round_status.runtime_status.value,
                                 **(round_status.custom_status or {})}
    view["silos"] = silo_rows(view["history"], view["current_round"], datetime.now(timezone.utc))
    return view


@bp.route(route="runs/{run_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@requires("scientist", "admin")
async def get_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    run_id = req.route_params["run_id"]
    status = await find_run(client, run_id)
    if status is None:
        return error(404, f"no run {run_id!r}")
    return respond(200, await run_detail(client, status))


@bp.route(route="runs/{run_id}/cancel", methods=["POST"])
@bp.durable_client_input(client_name="client")
@requires("scientist", "admin")
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Terminate the run and its current round, and cancel that round's silo jobs."""
    run_id = req.route_params["run_id"]
    status = await find_run(client, run_id)
    if status is None:
        return error(404, f"no run {run_id!r}")
    reason = "cancelled through the API"
    if status.runtime_status.value not in ("Running", "Pending"):
        if status.runtime_status.value == "Terminated":  # a retried cancel: its fact is recorded (again, once)
            await tell(_cancelled(status, reason))
        return error(409, f"run {run_id!r} is {status.runtime_status.value}, not running")
    round_status = await _current_round(client, status)
    await client.terminate(run_id, reason)
    cancelled_jobs = []
    if round_status:
        await client.terminate(round_status.instance_id, reason)
        for job_id in ((round_status.custom_status or {}).get("jobs") or {}).values():
            services().backend.cancel(job_id)
            cancelled_jobs.append(job_id)
    await tell(_cancelled(status, reason))
    return respond(202, {"run": run_id, "cancelled": True, "cancelled_jobs": cancelled_jobs})


def _cancelled(status: df.DurableOrchestrationStatus, reason: str) -> p.RunFact:
    custom = status.custom_status or {}
    return p.RunFact(kind="RunCancelled", run_id=status.instance_id, at=datetime.now(timezone.utc),
                     rounds_completed=len(rounds.round_results(services().store, status.instance_id)),
                     metrics=custom.get("metrics"), model=custom.get("model"), error=reason)
