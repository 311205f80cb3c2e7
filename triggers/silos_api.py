"""HTTP API for silos (admin only): onboard, list, show onboarding, disable, remove."""
from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from fedfunc import protocol as p
from fedfunc.coordinator import onboarding
from fedfunc.coordinator.services import services
from fedfunc.protocol import SiloFact
from fedfunc.registry import UnknownSilo
from fedfunc.validation import SILO_NAME_RULE, is_silo_name
from triggers.auth import requires
from triggers.http_util import BadRequest, error, json_body, respond
from triggers.observe import tell

bp = df.Blueprint()


def onboarding_instance(silo: str) -> str:
    return f"onboard:{silo}"


class NotASilo(LookupError):
    """A route names something no silo can be called."""


def _silo_name(req: func.HttpRequest) -> str:
    """The route's silo name; ``NotASilo`` (404) for a name no silo can have, before anything looks it up."""
    name = req.route_params["name"]
    if not is_silo_name(name):
        raise NotASilo(f"no silo {name[:40]!r}: silo names are {SILO_NAME_RULE}")
    return name


def _public(record) -> dict:
    """A registry record without the orchestrator's outbox SAS (a credential, never returned)."""
    return record.model_dump(mode="json", exclude={"outbox_read_sas"})


@bp.route(route="silos", methods=["POST"])
@bp.durable_client_input(client_name="client")
@requires("admin")
async def add_silo(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        request = onboarding.parse_request(json_body(req))
        onboarding.validate(services(), request)
    except (BadRequest, onboarding.OnboardingError) as e:
        return error(400, str(e))
    instance = onboarding_instance(request.name)
    current = await client.get_status(instance)
    if current and current.runtime_status and current.runtime_status.value in ("Running", "Pending"):
        return respond(202, {"silo": request.name, "onboarding": f"/api/silos/{request.name}/onboarding",
                             "note": "onboarding already in progress"})
    if current and current.runtime_status:
        await client.purge_instance_history(instance)
    await client.start_new(p.ONBOARDING, instance, request.model_dump(mode="json"))
    return respond(202, {"silo": request.name, "onboarding": f"/api/silos/{request.name}/onboarding"})


@bp.route(route="silos", methods=["GET"])
@requires("admin", "scientist")
async def list_silos(req: func.HttpRequest) -> func.HttpResponse:
    return respond(200, {"silos": [_public(r) for r in services().registry.list()]})


@bp.route(route="silos/{name}/onboarding", methods=["GET"])
@bp.durable_client_input(client_name="client")
@requires("admin")
async def onboarding_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        name = _silo_name(req)
    except NotASilo as e:
        return error(404, str(e))
    status = await client.get_status(onboarding_instance(name))
    if not status or status.runtime_status is None:
        return error(404, f"no onboarding of silo {name!r}")
    custom = status.custom_status or {}
    return respond(200, {"silo": name, "runtime_status": status.runtime_status.value, "step": custom.get("step"),
                         "done": custom.get("done"), "error": custom.get("error"), "output": status.output})


@bp.route(route="silos/{name}/disable", methods=["POST"])
@requires("admin")
async def disable_silo(req: func.HttpRequest) -> func.HttpResponse:
    """A disabled silo is left out from the next round on; the round in progress is not disturbed.
    Disabling it again changes nothing and tells ``SiloDisabled`` again under the same id."""
    registry = services().registry
    try:
        record = registry.get(_silo_name(req))
    except (NotASilo, UnknownSilo) as e:
        return error(404, str(e))
    if record.status != "disabled":
        record = registry.set_status(record.name, "disabled")
        services().audit.record("silo_disabled", silo=record.name)
    await tell(SiloFact(kind="SiloDisabled", silo=record.name, at=record.updated_at,
                        occurrence=f"{record.updated_at:%Y%m%dT%H%M%S%f}", compute=record.compute))
    return respond(200, _public(record))


@bp.route(route="silos/{name}", methods=["DELETE"])
@requires("admin")
async def remove_silo(req: func.HttpRequest) -> func.HttpResponse:
    try:
        name = _silo_name(req)
        services().registry.get(name)
    except (NotASilo, UnknownSilo) as e:
        return error(404, str(e))
    onboarding.remove(services(), name)
    services().audit.record("silo_removed", silo=name)
    return respond(200, {"silo": name, "removed": True})
