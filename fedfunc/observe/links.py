"""Signed, expiring links to a run's page: a browser cannot send ``x-api-key``, so a caller with a role
asks the API for a link, and the link itself is the credential for that one run until it expires.

``sig`` is HMAC-SHA256 with the server's ``FEDFUNC_LINK_KEY`` over the purpose, the run id and the
expiry, so a link opens exactly one run's page, not another run's and not the API, and not after ``exp``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time

PURPOSE = b"fedfunc-run-page/1"
MAX_TTL_S = 7 * 86400


class LinkRefused(Exception):
    """The link does not open this page (the message says why)."""


def _mac(key: str, run: str, expires: int) -> str:
    message = b"\n".join((PURPOSE, run.encode(), str(expires).encode()))
    return base64.urlsafe_b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode().rstrip("=")


def sign(key: str, run: str, ttl_s: int, now: float | None = None) -> dict[str, str]:
    """The query parameters of a link to ``run``'s page valid for ``ttl_s`` seconds."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: between 1 and {MAX_TTL_S} seconds")
    expires = int((now or time.time()) + ttl_s)
    return {"exp": str(expires), "sig": _mac(key, run, expires)}


def verify(key: str, run: str, exp: str | None, sig: str | None, now: float | None = None) -> None:
    """Return if ``exp``/``sig`` open ``run``'s page now; else ``LinkRefused``."""
    if not exp or not sig:
        raise LinkRefused("not a signed link (exp and sig are missing)")
    try:
        expires = int(exp)
    except ValueError:
        raise LinkRefused("exp is not a number") from None
    if not hmac.compare_digest(sig.encode(), _mac(key, run, expires).encode()):
        raise LinkRefused(f"the signature does not match run {run!r} (a link opens only the run it was made for)")
    if expires < (now or time.time()):
        raise LinkRefused("the link has expired; ask for a new one (fedfunc run open)")
