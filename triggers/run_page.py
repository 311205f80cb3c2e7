"""The run page over HTTP: ``GET /api/runs/{id}/report`` (HTML, ``fedfunc.observe.page``) for the API's roles
or a signed link, and ``POST /api/runs/{id}/link``, which makes such a link (or, with Entra ID sign-in,
the sign-in link that returns to the page)."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode, urlsplit

import azure.durable_functions as df
import azure.functions as func

from fedfunc.coordinator.services import services
from fedfunc.observe import links
from fedfunc.observe.page import CSP, render_message, render_page
from fedfunc.security.roles import AuthError, easy_auth_enabled, require
from triggers.auth import configured, requires
from triggers.http_util import BadRequest, error, json_body, respond
from triggers.runs_api import find_run, run_detail

bp = df.Blueprint()
LINK_TTL_S = 3600


def _html(status: int, body: str, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers={
        "Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff", **(headers or {})})


def _page_url(req: func.HttpRequest, run_id: str) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}/api/runs/{run_id}/report"


def _page_refusal(req: func.HttpRequest, run_id: str) -> func.HttpResponse | None:
    """None if the caller may see ``run_id``'s page: a role (API key, or the Entra ID principal App Service
    Authentication passes), or a signed link made for this run and not expired. Else the answer."""
    params = req.params
    if "sig" in params or "exp" in params:
        key = services().settings.link_key
        try:
            if not key:
                raise links.LinkRefused("signed links are off here (FEDFUNC_LINK_KEY is not set)")
            links.verify(key, run_id, params.get("exp"), params.get("sig"))
        except links.LinkRefused as e:
            return _html(403, render_message("Forbidden", f"This link does not open run {run_id}: {e}"))
        return None
    try:
        require(("scientist", "admin"), req.headers, services().settings.api_keys)
    except AuthError as e:
        if e.status == 401 and easy_auth_enabled():   # a browser without a session: sign in, come back
            return func.HttpResponse(status_code=302, headers={
                "Location": "/.auth/login/aad?" + urlencode({"post_login_redirect_uri": f"/api/runs/{run_id}/report"})})
        hint = " Open the link `fedfunc run open RUN` prints." if e.status == 401 else ""
        return _html(e.status, render_message("Unauthorized" if e.status == 401 else "Forbidden", str(e) + hint))
    return None


@bp.route(route="runs/{run_id}/report", methods=["GET"])
@bp.durable_client_input(client_name="client")
@configured
async def run_page(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The run page (HTML), for the same roles as the API or through a signed link; it refreshes itself
    while the run goes on."""
    run_id = req.route_params["run_id"]
    refused = _page_refusal(req, run_id)
    if refused:
        return refused
    status = await find_run(client, run_id)
    if status is None:
        return _html(404, render_message("Not found", f"There is no run {run_id}."))
    return _html(200, render_page(await run_detail(client, status)))


def _ttl(req: func.HttpRequest) -> int:
    body = json_body(req) if req.get_body() else {}
    ttl = body.get("ttl_s", LINK_TTL_S) if isinstance(body, dict) else None
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= links.MAX_TTL_S:
        raise BadRequest(f"ttl_s: a whole number of seconds, 1 to {links.MAX_TTL_S}")
    return ttl


@bp.route(route="runs/{run_id}/link", methods=["POST"])
@bp.durable_client_input(client_name="client")
@requires("scientist", "admin")
async def run_link(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A link to the run page a browser can open: signed and expiring (``FEDFUNC_LINK_KEY``), or with
    Entra ID sign-in (App Service Authentication) the sign-in link that returns to the page."""
    run_id = req.route_params["run_id"]
    try:
        ttl_s = _ttl(req)
    except BadRequest as e:
        return error(400, str(e))
    if await find_run(client, run_id) is None:
        return error(404, f"no run {run_id!r}")
    page, key = _page_url(req, run_id), services().settings.link_key
    if key:
        signed = links.sign(key, run_id, ttl_s)
        expires = datetime.fromtimestamp(int(signed["exp"]), timezone.utc).isoformat()
        return respond(200, {"run": run_id, "url": f"{page}?{urlencode(signed)}", "expires": expires})
    if easy_auth_enabled():
        origin = page.removesuffix(f"/api/runs/{run_id}/report")
        login = f"{origin}/.auth/login/aad?" + urlencode({"post_login_redirect_uri": f"/api/runs/{run_id}/report"})
        return respond(200, {"run": run_id, "url": login, "expires": None, "sign_in": "entra-id"})
    return error(503, "FEDFUNC_LINK_KEY: not set, so this app makes no signed links (and has no sign-in)")
