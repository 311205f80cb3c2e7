"""The Durable HTTP management API and the Durable client binding.

Two route sets share one implementation:
- public `/runtime/webhooks/durabletask/...` (the check-status URLs; bodies are plain JSON): the
  `durabletask_extension` system key or the master key, which the URLs carry as `code=`, as on Azure;
- `rpcBaseUrl` `/durabletask/{secret}/...`, called by the SDK's `DurableOrchestrationClient`
  (which sends no key, so a per-process secret is in the path); its request bodies are JSON
  strings holding JSON text (the SDK encodes twice).
"""
from __future__ import annotations

import json
import secrets
from urllib.parse import quote

from aiohttp import web

from fedfunc.host.auth import HostRoutes, path_secret, system
from fedfunc.host.engine import TERMINAL, Engine, Gone, NotFound, UnknownFunction
from fedfunc.host.keys import HostKeys

PUBLIC = "/runtime/webhooks/durabletask"
SYSTEM_KEY = "durabletask_extension"
TASK_HUB = "TestHubName"


class Management:
    def __init__(self, engine: Engine, origin: str, keys: HostKeys):
        self.engine = engine
        self.origin = origin
        self.keys = keys
        self.secret = secrets.token_urlsafe(24)  # the rpc channel's key, new in every process
        self.rpc = f"/durabletask/{self.secret}"

    # ---- the client binding ----------------------------------------------------------------
    def _query(self) -> str:
        return f"taskHub={TASK_HUB}&connection=Storage&code={quote(self.keys.system[SYSTEM_KEY])}"

    def management_urls(self, instance_id: str = "INSTANCEID", origin: str | None = None) -> dict:
        base = f"{origin or self.origin}{PUBLIC}/instances/{instance_id}"
        q = self._query()
        return {"id": instance_id,
                "statusQueryGetUri": f"{base}?{q}",
                "sendEventPostUri": f"{base}/raiseEvent/{{eventName}}?{q}",
                "terminatePostUri": f"{base}/terminate?reason={{text}}&{q}",
                "purgeHistoryDeleteUri": f"{base}?{q}",
                "rewindPostUri": f"{base}/rewind?reason={{text}}&{q}",
                "restartPostUri": f"{base}/restart?{q}",
                "suspendPostUri": f"{base}/suspend?reason={{text}}&{q}",
                "resumePostUri": f"{base}/resume?reason={{text}}&{q}"}

    def client_binding(self) -> str:
        """The JSON the Functions host passes for a `durable_client_input` binding."""
        base = f"{self.origin}{PUBLIC}"
        return json.dumps({
            "taskHubName": TASK_HUB,
            "creationUrls": {
                "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?{self._query()}",
                "createAndWaitOnNewInstancePostUri":
                    f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}&"
                    f"pollingInterval={{intervalInSeconds}}&{self._query()}"},
            "managementUrls": self.management_urls(),
            "baseUrl": base,
            "requiredQueryStringParameters": self._query(),
            "rpcBaseUrl": f"{self.origin}{self.rpc}/",
        })

    # ---- routes -------------------------------------------------------------------------------
    def add_routes(self, routes: HostRoutes) -> None:
        for prefix, rpc, rule in ((PUBLIC, False, system(SYSTEM_KEY)),
                                  ("/durabletask/{rpc}", True, path_secret("rpc", self.secret))):
            def bind(handler, rpc=rpc):
                async def route(request: web.Request) -> web.Response:
                    return await handler(request, rpc)
                return route
            for method, path, handler in (
                    ("POST", "/orchestrators/{name}", self.start), ("POST", "/orchestrators/{name}/{id}", self.start),
                    ("GET", "/instances", self.list), ("GET", "/instances/", self.list),
                    ("DELETE", "/instances", self.purge_by), ("DELETE", "/instances/", self.purge_by),
                    ("GET", "/instances/{id}", self.status), ("DELETE", "/instances/{id}", self.purge),
                    ("POST", "/instances/{id}/raiseEvent/{event}", self.raise_event),
                    ("POST", "/instances/{id}/terminate", self.terminate)):
                routes.add(method, prefix + path, bind(handler), rule)

    @staticmethod
    async def _payload(request: web.Request, rpc: bool) -> str | None:
        """The JSON text to store; raises 400 on malformed JSON."""
        raw = (await request.read()).decode() if request.can_read_body else ""
        if not raw.strip():
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"request body is not valid JSON: {exc}"}),
                                     content_type="application/json")
        if rpc and isinstance(value, str):
            return value
        return raw

    async def start(self, request: web.Request, rpc: bool) -> web.Response:
        input_text = await self._payload(request, rpc)
        try:
            instance_id = self.engine.start_new(request.match_info["name"], request.match_info.get("id"), input_text)
        except UnknownFunction as exc:
            return web.json_response({"ExceptionMessage": str(exc), "Message": str(exc)}, status=400)
        origin = f"{request.scheme}://{request.host}"
        payload = self.management_urls(instance_id, origin)
        return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"]})

    async def status(self, request: web.Request, rpc: bool) -> web.Response:
        q = request.query
        status = self.engine.status(request.match_info["id"], show_history=_flag(q.get("showHistory")),
                                    show_input=q.get("showInput", "true").lower() != "false")
        if status is None:
            return web.json_response({"message": f"No instance with ID '{request.match_info['id']}' found."}, status=404)
        return web.json_response(status, status=200 if status["runtimeStatus"] in TERMINAL else 202)

    async def list(self, request: web.Request, rpc: bool) -> web.Response:
        q = request.query
        statuses = [s for s in q.get("runtimeStatus", "").split(",") if s]
        try:
            found = self.engine.list_instances(statuses, q.get("createdTimeFrom"), q.get("createdTimeTo"),
                                     q.get("instanceIdPrefix"), _flag(q.get("showInput")))
        except ValueError as exc:
            return web.json_response({"error": f"bad filter: {exc}"}, status=400)
        return web.json_response(found)

    async def raise_event(self, request: web.Request, rpc: bool) -> web.Response:
        data = await self._payload(request, rpc)
        return self._outcome(lambda: self.engine.raise_event(request.match_info["id"], request.match_info["event"], data))

    async def terminate(self, request: web.Request, rpc: bool) -> web.Response:
        reason = request.query.get("reason", "")
        return self._outcome(lambda: self.engine.terminate(request.match_info["id"], reason))

    @staticmethod
    def _outcome(operation) -> web.Response:
        try:
            operation()
        except NotFound as exc:
            return web.json_response({"message": str(exc)}, status=404)
        except Gone as exc:
            return web.json_response({"message": str(exc)}, status=410)
        return web.json_response({}, status=202)

    async def purge(self, request: web.Request, rpc: bool) -> web.Response:
        deleted = self.engine.purge(request.match_info["id"])
        return web.json_response({"instancesDeleted": deleted}, status=200 if deleted else 404)

    async def purge_by(self, request: web.Request, rpc: bool) -> web.Response:
        q = request.query
        statuses = [s for s in q.get("runtimeStatus", "").split(",") if s]
        found = self.engine.list_instances(statuses, q.get("createdTimeFrom"), q.get("createdTimeTo"), q.get("instanceIdPrefix"))
        deleted = sum(self.engine.purge(s["instanceId"]) for s in found)
        return web.json_response({"instancesDeleted": deleted}, status=200 if deleted else 404)


def _flag(value: str | None) -> bool:
    return (value or "").lower() == "true"
