"""Job tickets: the orchestrator's signed permission for one silo to run one job.

A ticket binds run, round, silo, the code hash of the signed bundle, the round nonce, the global model
(where it is read from — the blob URL, which names the account, container and path — and its sha256)
and an expiry, and names its issuer's key id. A silo runs a job only with a ticket that verifies against
an orchestrator key its own policy lists, so neither a stolen request nor a compute principal that can
submit jobs can start training on a silo without the orchestrator's key — nor make a genuine ticket
train from a crafted starting model (a known route to reconstructing training data from an update).

Token: ``fft1.<base64url(payload JSON)>.<base64url(Ed25519 signature)>``; the signature covers
``fedfunc-ticket/1.`` + the payload part, so it cannot be replayed as another kind of signature.
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, ValidationError

from fedfunc.security import Refused
from fedfunc.security.keys import key_id, keyring

PREFIX = "fft1"
_DOMAIN = b"fedfunc-ticket/1."
DEFAULT_TTL = timedelta(hours=2)


class JobTicket(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str
    round: int
    silo: str
    code_hash: str
    nonce: str
    model_url: str     # the global model's blob URL without its query (no SAS): account, container, path
    model_sha256: str  # what the silo must download from there
    expires_at: int    # unix seconds
    issuer: str        # key id of the signing key


def blob_location(url: str) -> str:
    """Where a URL reads from: scheme, host and path, without the query (a SAS) or fragment.

    Locally (Azurite) the account is the path's first segment, on Azure it is in the host name; either
    way this string names account, container and blob."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def issue_ticket(private_key: Ed25519PrivateKey, *, run: str, round: int, silo: str, code_hash: str, nonce: str,
                 model_url: str, model_sha256: str, ttl: timedelta = DEFAULT_TTL, now: datetime | None = None) -> str:
    ticket = JobTicket(run=run, round=round, silo=silo, code_hash=code_hash, nonce=nonce,
                       model_url=blob_location(model_url), model_sha256=model_sha256,
                       expires_at=int((_now(now) + ttl).timestamp()), issuer=key_id(private_key.public_key()))
    payload = _b64e(ticket.model_dump_json().encode())
    return f"{PREFIX}.{payload}.{_b64e(private_key.sign(_DOMAIN + payload.encode()))}"


def _parse(token: str, what: str) -> tuple[JobTicket, str, bytes]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Refused("ticket.malformed", what, f"not a {PREFIX} ticket")
    try:
        return JobTicket.model_validate_json(_b64d(parts[1])), parts[1], _b64d(parts[2])
    except (ValidationError, ValueError, binascii.Error) as e:
        raise Refused("ticket.malformed", what, f"unreadable ticket ({type(e).__name__})") from None


def verify_ticket(token: str | None, trusted_orchestrator_keys: Iterable, *, silo: str, run: str, round: int,
                  code_hash: str, nonce: str, model_url: str, model_sha256: str,
                  now: datetime | None = None) -> JobTicket:
    """The ticket, if it is signed by a trusted key and matches this job exactly — including where the
    global model is read from and its sha256 (rules ``ticket.model_url``, ``ticket.model_sha256``); else
    ``Refused``. The silo then checks the bytes it downloads against the same sha256 (``ticket.model_bytes``)."""
    what = f"job ticket for {run}/r{round}/{silo}"
    try:
        location = blob_location(model_url)
    except ValueError:
        raise Refused("ticket.model_url", what, f"model URL {model_url[:80]!r} is not a URL") from None
    if not token:
        raise Refused("ticket.missing", what, "the job request carries no ticket")
    ticket, payload, signature = _parse(token, what)
    key = keyring(trusted_orchestrator_keys).get(ticket.issuer)
    if key is None:
        raise Refused("ticket.untrusted_issuer", what,
                      f"issuer key {ticket.issuer} is not an orchestrator key this silo's policy trusts")
    try:
        key.verify(signature, _DOMAIN + payload.encode())
    except InvalidSignature:
        raise Refused("ticket.signature", what, f"signature does not verify with key {ticket.issuer}") from None
    for field, want in (("silo", silo), ("run", run), ("round", round), ("nonce", nonce), ("code_hash", code_hash),
                        ("model_url", location), ("model_sha256", model_sha256)):
        got = getattr(ticket, field)
        if got != want:
            raise Refused(f"ticket.{field}", what, f"ticket is for {field}={got!r}, this job has {want!r}")
    at = _now(now)
    if at.timestamp() >= ticket.expires_at:
        expired = datetime.fromtimestamp(ticket.expires_at, timezone.utc).isoformat()
        raise Refused("ticket.expired", what, f"ticket expired at {expired}, now is {at.isoformat()}")
    return ticket

