"""HTTP triggers: route templates, auth levels and the `func.HttpRequest`/`HttpResponse` mapping."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from fedfunc.host.app_loader import App, Function
from fedfunc.host.auth import http_trigger, refuse
from fedfunc.host.invoke import Invoker, logged
from fedfunc.host.keys import HostKeys

log = logging.getLogger("fedfunc.host")

_INT = r"-?[0-9]+"


@dataclass
class Route:
    function: Function
    pattern: re.Pattern
    methods: set[str] | None
    params: int


def compile_route(template: str) -> tuple[re.Pattern, int]:
    """ASP.NET-style templates: `{x}`, `{x?}`, `{x:int}`, `{*rest}`."""
    regex, params = "", 0
    for i, segment in enumerate(template.strip("/").split("/")):
        sep = "/" if i else ""
        m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}", segment)
        if not m:
            regex += sep + re.escape(segment)
            continue
        params += 1
        catch_all, name, constraint, optional = m.groups()
        body = ".*" if catch_all else (_INT if constraint in ("int", "long") else "[^/]+")
        group = f"(?P<{name}>{body})"
        regex += f"(?:{sep}{group})?" if optional or catch_all else sep + group
    return re.compile(regex + "/?"), params


class HttpTriggers:
    def __init__(self, app: App, invoker: Invoker, keys: HostKeys):
        self.invoker, self.keys = invoker, keys
        self.prefix = f"/{app.route_prefix}" if app.route_prefix else ""
        self.routes: list[Route] = []
        for f in app.of_type("httpTrigger"):
            if f.disabled:
                continue
            pattern, params = compile_route(f.trigger.get("route") or f.name)
            methods = {m.upper() for m in f.trigger["methods"]} if f.trigger.get("methods") else None
            self.routes.append(Route(f, pattern, methods, params))
        self.routes.sort(key=lambda r: r.params)  # literal routes win over parameterised ones

    def match(self, path: str, method: str) -> tuple[Route | None, dict, bool]:
        """(route, route params, path matched at all)."""
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            return None, {}, False
        rest = path[len(self.prefix):].lstrip("/")
        found = False
        for r in self.routes:
            m = r.pattern.fullmatch(rest)
            if m:
                found = True
                if r.methods is None or method in r.methods:
                    return r, {k: v for k, v in m.groupdict().items() if v is not None}, True
        return None, {}, found

    async def handle(self, request: web.Request) -> web.Response:
        route, params, path_found = self.match(request.path, request.method)
        if route is None:
            return web.json_response({"error": f"no function handles {request.method} {request.path}"},
                                     status=405 if path_found else 404)
        reason = http_trigger(route.function.trigger.get("authLevel"))(request, self.keys)
        if reason:
            return refuse(request, reason)
        req = func.HttpRequest(method=request.method, url=str(request.url), headers=dict(request.headers),
                               params=dict(request.query), route_params=params, body=await request.read())
        try:
            with logged("http", route.function.name):
                result = await self.invoker.call_async(route.function, req)
        except Exception as exc:
            return web.json_response({"error": f"function '{route.function.name}' failed: {exc}"}, status=500)
        return to_aiohttp(result)


def to_aiohttp(result) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, func.HttpResponse):
        headers = CIMultiDict(result.headers.items())
        headers.setdefault("Content-Type", result.mimetype + (f"; charset={result.charset}" if result.charset else ""))
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
    if isinstance(result, (bytes, str)):
        return web.Response(body=result if isinstance(result, bytes) else result.encode())
    return web.json_response(result)
