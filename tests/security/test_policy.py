"""Silo policy: parsing fails closed, and each rule refuses naming itself and the object."""
from datetime import datetime, timedelta, timezone

import pytest

from fedfunc.contracts import SiloJobRequest
from fedfunc.security import Refused, keys
from fedfunc.security.policy import SiloPolicy, enforce, parse_policy, recent_usage

ORCH = keys.public_b64(keys.generate().public_key())
REQ = SiloJobRequest(run_id="r1", round=2, silo="alpha", nonce="n", task="digits",
                     model_url="http://x/m", model_sha256="0" * 64, outbox_prefix="runs/r1/rounds/0002/silos/alpha/")


def policy(**over) -> SiloPolicy:
    return SiloPolicy(**{"silo": "alpha", "orchestrator_keys": [ORCH], "allowed_tasks": ["digits"], **over})


def _refused(rule, pol, usage=0) -> Refused:
    with pytest.raises(Refused) as e:
        enforce(pol, REQ, usage)
    assert e.value.rule == rule, str(e.value)
    return e.value


def test_allowed_job_passes():
    enforce(policy(max_rounds_per_day=3), REQ, usage=2)


def test_each_rule():
    assert "'beta'" in _refused("policy.silo", policy(silo="beta")).message
    assert _refused("policy.allowed_tasks", policy(allowed_tasks=["breast_cancer"])).object == "task 'digits'"
    assert "not available yet" in _refused("policy.min_privacy", policy(min_privacy={"max_epsilon": 1.0})).message
    assert "limit 3" in _refused("policy.max_rounds_per_day", policy(max_rounds_per_day=3), usage=3).message


def test_missing_or_invalid_policy_refuses():
    assert parse_policy(policy().model_dump_json().encode()).silo == "alpha"
    with pytest.raises(Refused) as e:
        parse_policy(None)
    assert (e.value.rule, e.value.object) == ("policy.missing", "policy/policy.json")
    for raw in (b"{not json", b'{"silo": "alpha"}', policy().model_dump_json().replace(ORCH, "AAAA").encode(),
                b'{"silo": "alpha", "orchestrator_keys": ["' + ORCH.encode() + b'"], "override": true}'):
        with pytest.raises(Refused) as e:
            parse_policy(raw)
        assert e.value.rule == "policy.invalid"


def test_usage_counts_distinct_other_jobs_in_the_last_24_hours():
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    at = lambda h: (now - timedelta(hours=h)).isoformat()
    lines = [{"kind": "job_started", "job": "a", "at": at(1)}, {"kind": "job_started", "job": "a", "at": at(2)},
             {"kind": "job_started", "job": "b", "at": at(23)}, {"kind": "job_started", "job": "c", "at": at(25)},
             {"kind": "job_refused", "job": "d", "at": at(1)}, {"kind": "job_started", "job": "self", "at": at(1)}]
    assert recent_usage(lines, "self", now) == 2
