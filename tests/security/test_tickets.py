"""Job tickets: every refusal names its rule and the ticket's job."""
from datetime import datetime, timedelta, timezone

import pytest

from fedfunc.security import Refused, keys
from fedfunc.security.tickets import issue_ticket, verify_ticket

ORCH = keys.generate()
MODEL = "http://127.0.0.1:10000/fedorch/models/run-1/round-0003/global.safetensors"
JOB = dict(run="run-1", round=3, silo="alpha", code_hash="ab" * 32, nonce="n-3", model_url=MODEL,
           model_sha256="cd" * 32)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def _verify(token, trusted=(keys.public_b64(ORCH.public_key()),), now=NOW, **over):
    return verify_ticket(token, list(trusted), **{**JOB, **over}, now=now)


def _refused(rule, token, **kw):
    with pytest.raises(Refused) as e:
        _verify(token, **kw)
    assert e.value.rule == rule and "job ticket for run-1/r3/alpha" in str(e.value), str(e.value)
    return e.value


def test_a_valid_ticket_verifies_and_names_its_issuer():
    ticket = _verify(issue_ticket(ORCH, **JOB, now=NOW))
    assert ticket.issuer == keys.key_id(ORCH.public_key()) and ticket.silo == "alpha"


def test_trusted_keys_may_be_given_as_pem_too():
    assert _verify(issue_ticket(ORCH, **JOB, now=NOW), trusted=[keys.public_pem(ORCH.public_key()).decode()])


@pytest.mark.parametrize("field, value", [("silo", "beta"), ("run", "run-2"), ("round", 4), ("nonce", "n-4"),
                                          ("code_hash", "cd" * 32), ("model_sha256", "ef" * 32)])
def test_a_ticket_for_another_job_is_refused(field, value):
    err = _refused(f"ticket.{field}", issue_ticket(ORCH, **{**JOB, field: value}, now=NOW))
    assert repr(value) in err.message


@pytest.mark.parametrize("swapped", [
    "http://127.0.0.1:10000/silo02/models/run-1/round-0003/global.safetensors",   # another account
    "http://127.0.0.1:10001/fedorch/models/run-1/round-0003/global.safetensors",  # another endpoint
    "http://127.0.0.1:10000/fedorch/outbox/run-1/round-0003/global.safetensors",  # another container
    "http://127.0.0.1:10000/fedorch/models/run-2/round-0000/global.safetensors",  # another blob
])
def test_a_genuine_ticket_with_a_swapped_model_url_is_refused(swapped):
    token = issue_ticket(ORCH, **JOB, now=NOW)
    err = _refused("ticket.model_url", token, model_url=swapped + "?sv=2024&sig=abc")
    assert MODEL in err.message


def test_the_model_url_is_bound_without_its_sas():
    token = issue_ticket(ORCH, **{**JOB, "model_url": MODEL + "?sv=1&sig=orchestrators"}, now=NOW)
    assert _verify(token, model_url=MODEL + "?sv=1&sig=another-sas-for-the-same-blob").model_url == MODEL


def test_expiry():
    token = issue_ticket(ORCH, **JOB, ttl=timedelta(minutes=10), now=NOW)
    assert _verify(token, now=NOW + timedelta(minutes=9))
    assert "expired at 2026-11-27T12:10:00" in _refused("ticket.expired", token, now=NOW + timedelta(minutes=10)).message


def test_forged_by_an_untrusted_key():
    _refused("ticket.untrusted_issuer", issue_ticket(keys.generate(), **JOB, now=NOW))


def test_signature_swapped_in_from_another_ticket():
    a = issue_ticket(ORCH, **JOB, now=NOW).split(".")
    b = issue_ticket(ORCH, **{**JOB, "silo": "beta"}, now=NOW).split(".")
    with pytest.raises(Refused) as e:
        verify_ticket(".".join([a[0], b[1], a[2]]), [keys.public_b64(ORCH.public_key())], **{**JOB, "silo": "beta"},
                      now=NOW)
    assert e.value.rule == "ticket.signature"


@pytest.mark.parametrize("token, rule", [(None, "ticket.missing"), ("", "ticket.missing"),
                                         ("garbage", "ticket.malformed"), ("fft1.!!!.???", "ticket.malformed"),
                                         ("jwt.eyJ9.sig", "ticket.malformed")])
def test_missing_or_malformed(token, rule):
    _refused(rule, token)
