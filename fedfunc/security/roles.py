"""Who may call which HTTP route: ``admin`` (silos, policy) or ``scientist`` (runs, comparisons).

Locally the caller sends ``x-api-key``; ``FEDFUNC_API_KEYS`` maps keys to roles (compared in constant
time). On Azure, App Service Authentication (Easy Auth) validates the Entra ID token and passes the
principal in ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON, app roles as claims of type ``roles``). That header
is trusted only when Easy Auth is on (``WEBSITE_AUTH_ENABLED=True``, set by App Service), because
Easy Auth strips it from incoming requests; anywhere else a client could forge it, so it is ignored.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from collections.abc import Collection, Mapping
from typing import Literal

Role = Literal["admin", "scientist"]
ROLES: tuple[Role, ...] = ("admin", "scientist")
PRINCIPAL_HEADER = "x-ms-client-principal"
API_KEY_HEADER = "x-api-key"


class AuthError(Exception):
    """Maps to an HTTP error: ``status`` 401 (who are you?) or 403 (not allowed); ``body`` is JSON-ready."""

    def __init__(self, status: int, message: str, rule: str):
        super().__init__(message)
        self.status = status
        self.body = {"error": "unauthorized" if status == 401 else "forbidden", "rule": rule, "message": message}


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def easy_auth_enabled(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("WEBSITE_AUTH_ENABLED", "").lower() == "true"


def _principal_roles(encoded: str) -> frozenset[str]:
    try:
        principal = json.loads(base64.b64decode(encoded, validate=True))
        role_type = principal.get("role_typ") or "roles"
        claims = principal.get("claims") or []
        return frozenset(c.get("val") for c in claims if c.get("typ") in ("roles", role_type)) & set(ROLES)
    except (binascii.Error, ValueError, AttributeError, TypeError):
        return frozenset()


def principal_roles(headers: Mapping[str, str], api_keys: Mapping[str, str], *,
                    trust_principal_header: bool | None = None) -> frozenset[Role]:
    """The caller's roles (empty: anonymous). ``trust_principal_header`` defaults to ``easy_auth_enabled()``."""
    h = _lower(headers)
    if trust_principal_header is None:
        trust_principal_header = easy_auth_enabled()
    if trust_principal_header and PRINCIPAL_HEADER in h:
        return _principal_roles(h[PRINCIPAL_HEADER])
    offered = h.get(API_KEY_HEADER, "").encode()
    if offered:
        for key, role in api_keys.items():
            if hmac.compare_digest(offered, key.encode()) and role in ROLES:
                return frozenset({role})
    return frozenset()


def require(role_needed: Role | Collection[Role], headers: Mapping[str, str], api_keys: Mapping[str, str], *,
            trust_principal_header: bool | None = None) -> Role:
    """The caller's role that grants access; ``AuthError`` 401 if anonymous, 403 if no needed role."""
    needed = {role_needed} if isinstance(role_needed, str) else set(role_needed)
    roles = principal_roles(headers, api_keys, trust_principal_header=trust_principal_header)
    if not roles:
        raise AuthError(401, "authentication required: send an x-api-key (local) or sign in (Azure)",
                        "auth.anonymous")
    granted = sorted(roles & needed)
    if not granted:
        raise AuthError(403, f"this route needs role {' or '.join(sorted(needed))}; "
                             f"the caller has {', '.join(sorted(roles))}", "auth.role")
    return granted[0]
