"""HTTP API for runs (start, list, status with the per-silo view, cancel) and for the task bundles runs name
(upload, inspect). The run page: ``run_page.py``."""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func

from fedfunc import protocol as p
from fedfunc.coordinator import rounds
from fedfunc.coordinator.bundles import UnknownBundle, open_stored, store_bundle
from fedfunc.coordinator.services import services
from fedfunc.observe.silos import silo_rows
from fedfunc.pipeline import silo_side
from fedfunc.registry import UnknownSilo
from fedfunc.security import Refused
from fedfunc.security.bundle import BundleManifest, is_bundle_hash
from fedfunc.spec import RunSpec, SpecError, is_run_id, parse_spec
from triggers.auth import requires
from triggers.http_util import BadRequest, error, json_body, respond
from triggers.observe import tell

bp = df.Blueprint()
log = logging.getLogger("fedfunc.runs")


def validate_run_request(body: object) -> tuple[str, RunSpec]:
    """The run id (given or new) and the spec, completed from its bundle; errors name the field, bundle,
    silo, strategy or option."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: a run spec, optionally with \"run_id\"")
    body = dict(body)
    run_id = body.pop("run_id", None) or f"run-{uuid.uuid4().hex[:12]}"
    if not is_run_id(run_id):
        raise BadRequest("run_id: 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
    try:
        spec = parse_spec(body)
    except SpecError as e:
        raise BadRequest(str(e)) from None
    spec, manifest = _with_bundle(spec)
    for field in ("silos", "evaluators"):
        names = getattr(spec, field)
        for silo in names if isinstance(names, list) else []:
            try:
                services().registry.get(silo)
            except UnknownSilo as e:
                raise BadRequest(f"{field}: {e}") from None
    if isinstance(spec.silos, list):
        count = len(spec.silos)
    else:  # "all": the silos ready now (a rule that needs more can still fail a later round, with its reason)
        count = len([r for r in services().registry.list(status="ready") if r.name not in spec.evaluators])
    try:
        spec.strategy.check_run(count, manifest.config)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return run_id, spec


def _with_bundle(spec: RunSpec) -> tuple[RunSpec, BundleManifest]:
    """The spec with its bundle's task and signed hyper-parameters, and the bundle's manifest. Silos run only
    the signed bundle, so a spec that asks for another task or other hyper-parameters is refused here, early."""
    if spec.bundle is None:
        raise BadRequest("bundle: a run needs a task bundle signed by a scientist (`fedfunc sign`, then "
                         "`fedfunc bundle upload`); silos refuse unsigned code")
    try:
        manifest = open_stored(services().store, spec.bundle).manifest
    except UnknownBundle as e:
        raise BadRequest(f"bundle: {e}") from None
    except (Refused, ValueError) as e:
        raise BadRequest(f"bundle: the stored bundle {spec.bundle[:16]} is unreadable: {e}") from None
    if spec.task is not None and spec.task != manifest.task:
        raise BadRequest(f"task: the bundle is signed for task {manifest.task!r}, the spec asks for {spec.task!r}")
    hyperparams = manifest.config["hyperparams"]
    if spec.hyperparams is not None and spec.hyperparams != hyperparams:
        raise BadRequest(f"hyperparams: {spec.hyperparams} differ from the signed bundle's {hyperparams}")
    return spec.model_copy(update={"task": manifest.task, "hyperparams": hyperparams}), manifest


@bp.route(route="bundles", methods=["POST"])
@requires("scientist", "admin")
async def upload_bundle(req: func.HttpRequest) -> func.HttpResponse:
    """Store a signed task bundle (the raw ``.fedbundle`` bytes) once under its hash; runs name that hash."""
    svc = services()
    limit = int(svc.settings.max_bundle_mb * 2**20)
    declared = req.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return error(400, f"bundle: {declared} bytes exceeds the {limit}-byte bound (FEDFUNC_MAX_BUNDLE_MB)",
                     rule="bundle.size")
    try:
        bundle, stored = store_bundle(svc.store, req.get_body(), limit)
    except Refused as e:
        return error(400, f"bundle: {e}", rule=e.rule, object=e.object)
    svc.audit.record("bundle_uploaded", event_id=f"bundle:{bundle.code_hash}", bundle=bundle.code_hash,
                     task=bundle.manifest.task, signer=bundle.signer)
    return respond(201 if stored else 200, _bundle_view(bundle.code_hash, bundle.manifest, bundle.signer))


def _bundle_view(code_hash: str, manifest, signer: str | None) -> dict:
    return {"bundle": code_hash, "task": manifest.task, "signer": signer, "entry": manifest.entry,
            "num_classes": manifest.num_classes, "requirements": manifest.requirements,
            "hyperparams": manifest.config.get("hyperparams"), "files": sorted(manifest.files),
            "silo_side": silo_side(manifest.config).model_dump(mode="json")}


@bp.route(route="bundles/{code_hash}", methods=["GET"])
@requires("scientist", "admin")
async def get_bundle(req: func.HttpRequest) -> func.HttpResponse:
    code_hash = req.route_params["code_hash"]
    if not is_bundle_hash(code_hash):
        return error(400, "bundle: expected a 64-hex-digit bundle hash")
    try:
        opened = open_stored(services().store, code_hash)
    except UnknownBundle as e:
        return error(404, str(e))
    return respond(200, _bundle_view(code_hash, opened.manifest, opened.signature and opened.signature.signer))


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
    view = {**_run_view(status), "initial_metrics": custom.get("initial_metrics"),
            "history": rounds.round_results(services().store, status.instance_id), "report": custom.get("report"), "output": status.output, "current_round": None}
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
