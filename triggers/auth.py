"""Role checks for HTTP routes: ``admin`` for silos and policy, ``scientist`` for runs; every route answers
503 naming the setting while the app's settings are invalid."""
from __future__ import annotations

import functools

from fedfunc.coordinator.services import services
from fedfunc.security.roles import AuthError, Role, require
from fedfunc.settings import SettingsError
from triggers.http_util import error, respond


def configured(route):
    """Answer 503 naming the setting while the app's settings are invalid, before the route runs (for
    routes that check their callers themselves, like the run page's signed links)."""
    @functools.wraps(route)
    async def guarded(req, *args, **kwargs):
        try:
            services().settings
        except SettingsError as e:
            return error(503, f"the app is misconfigured: {e}")
        return await route(req, *args, **kwargs)
    return guarded


def requires(*roles: Role):
    """Answer 503 naming the setting while the app's settings are invalid, 401 (anonymous) or 403 (wrong
    role) with a JSON body naming the rule, before the route runs."""
    def decorate(route):
        @configured
        @functools.wraps(route)
        async def guarded(req, *args, **kwargs):
            try:
                require(roles, req.headers, services().settings.api_keys)
            except AuthError as e:
                return respond(e.status, e.body)
            return await route(req, *args, **kwargs)
        return guarded
    return decorate
