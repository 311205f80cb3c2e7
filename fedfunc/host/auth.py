"""Who may call which route, with the Functions host's rules (`x-functions-key` header, else `?code=`):

- the app's HTTP triggers: their `authLevel` (anonymous; function = the host key or the master key;
  admin = the master key);
- `/runtime/webhooks/{extension}/...`: that extension's system key (`{extension}_extension`) or the
  master key, as Azure's `SystemKeyAuthLevel` policy does;
- `/admin/...` and every other host route: the master key;
- the Durable client's rpc routes: the per-process secret in their path;
- a local Event Grid topic: that topic's key (`aeg-sas-key`) or a SAS token made from it (`aeg-sas-token`).

Every host route is added through `HostRoutes.add` with its rule; a route added without one gets
the master-key rule, and unknown paths under the host's own prefixes answer 401 before 404, so no
host route is ever anonymous. A refusal is logged as one line: route, remote address, reason.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from datetime import datetime
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote

from aiohttp import web

from fedfunc.host.keys import HostKeys, same

log = logging.getLogger("fedfunc.host")

Rule = Callable[[web.Request, HostKeys], "str | None"]  # None: allowed; else why not
RESERVED = ("/admin/", "/runtime/", "/durabletask/", "/eventgrid/")


def presented_key(request: web.Request) -> str:
    return request.headers.get("x-functions-key") or request.query.get("code") or ""


def master(request: web.Request, keys: HostKeys) -> str | None:
    if keys.level(presented_key(request))[0] == "admin":
        return None
    return "this route needs the master key (x-functions-key header or ?code=)"


def system(name: str) -> Rule:
    def rule(request: web.Request, keys: HostKeys) -> str | None:
        level, key_name = keys.level(presented_key(request))
        if level == "admin" or (level == "system" and key_name == name):
            return None
        return f"this route needs the {name} system key or the master key (x-functions-key header or ?code=)"
    return rule


def http_trigger(level: str | None) -> Rule:
    """An HTTP trigger's `authLevel`."""
    level = (level or "function").lower()

    def rule(request: web.Request, keys: HostKeys) -> str | None:
        if level == "anonymous":
            return None
        given = keys.level(presented_key(request))[0]
        if given == "admin" or (level == "function" and given == "function"):
            return None
        return f"this {level}-level function needs {'the master key' if level == 'admin' else 'a function key'} " \
               "(x-functions-key header or ?code=)"
    return rule


def path_secret(param: str, secret: str) -> Rule:
    """The Durable client's rpc channel: the SDK sends no headers, so the secret is in the path."""
    def rule(request: web.Request, keys: HostKeys) -> str | None:
        return None if same(request.match_info.get(param), secret) else "unknown rpc channel"
    return rule


def topic_key(param: str) -> Rule:
    """Event Grid's publisher auth for custom topics: `aeg-sas-key`, or `aeg-sas-token` signed with the key."""
    def rule(request: web.Request, keys: HostKeys) -> str | None:
        topic = request.match_info.get(param, "")
        key = keys.topics.get(topic)
        if key is None:
            return f"no topic named {topic!r}"
        if same(request.headers.get("aeg-sas-key"), key):
            return None
        token = request.headers.get("aeg-sas-token")
        if token and sas_token_valid(token, key, str(request.url.with_query(None))):
            return None
        return f"topic {topic!r} needs its key (aeg-sas-key header) or a SAS token (aeg-sas-token)"
    return rule


def sas_token_valid(token: str, key: str, endpoint: str) -> bool:
    """`r={resource}&e={expiry}&s={signature}` as `azure.eventgrid.generate_sas` makes it."""
    parts = parse_qs(token, keep_blank_values=True)
    try:
        resource, expiry, signature = parts["r"][0], parts["e"][0], parts["s"][0]
        secret = base64.b64decode(key, validate=True)
    except (KeyError, IndexError, ValueError):
        return False
    unsigned = token.rsplit("&s=", 1)[0]
    expected = base64.b64encode(hmac.new(secret, unsigned.encode("ascii"), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, signature):
        return False
    try:
        expires = datetime.fromisoformat(unquote(expiry).replace(" ", "T")).timestamp()
    except ValueError:
        return False
    return expires > time.time() and unquote(resource).split("?")[0].rstrip("/") == endpoint.rstrip("/")


def refuse(request: web.Request, reason: str) -> web.Response:
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, reason)
    return web.json_response({"error": f"unauthorized: {reason}"}, status=401)


class HostRoutes:
    """The host's routes, each with its rule, and the middleware that enforces them."""

    def __init__(self, web_app: web.Application, keys: HostKeys):
        self.web_app, self.keys = web_app, keys
        self.rules: dict[web.AbstractRoute, Rule] = {}
        self.app_route: web.AbstractRoute | None = None
        web_app.middlewares.append(self._middleware)

    def add(self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
            rule: Rule) -> None:
        self.rules[self.web_app.router.add_route(method, path, handler)] = rule

    def add_app(self, handler) -> None:
        """The catch-all that serves the app's HTTP triggers (which check their own auth level)."""
        self.app_route = self.web_app.router.add_route("*", "/{tail:.*}", handler)

    def rule_for(self, request: web.Request) -> Rule | None:
        route = request.match_info.route
        if route is self.app_route:
            return master if request.path.startswith(RESERVED) else None
        return self.rules.get(route, master)

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        rule = self.rule_for(request)
        reason = rule(request, self.keys) if rule else None
        if reason:
            return refuse(request, reason)
        return await handler(request)

    def host_routes(self) -> list[tuple[str, str]]:
        """(method, path template) of every host route: what the auth tests enumerate."""
        return [(route.method, route.resource.canonical) for route in self.web_app.router.routes()
                if route is not self.app_route and route.method != "HEAD"]

