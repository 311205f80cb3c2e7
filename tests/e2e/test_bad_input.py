"""Bad run requests get a 400 naming the field; the API's roles answer 401/403."""
from __future__ import annotations

import pytest
import requests



@pytest.mark.parametrize("change, named", [
    ({"rounds": 0}, "rounds"),
    ({"task": "imagenet"}, "imagenet"),
    ({"silos": ["site-1", "nowhere"]}, "nowhere"),
    ({"strategy": "fedmystery"}, "unknown aggregation strategy 'fedmystery'"),
    ({"strategy": {"name": "fedadam", "options": {"eta": -1}}}, "strategy.options: Value error, eta"),
    ({"strategy": {"name": "trimmed_mean", "options": {"beta": 0.5}}}, "beta: Input should be less than 0.5"),
    ({"strategy": {"name": "krum", "options": {"f": 1}}}, "krum needs at least 5 updates"),
    ({"strategy": "fedprox"}, "the signed bundle must set proximal_mu > 0"),
    ({"aggregator": "fedavg"}, 'aggregator: Value error, renamed to "strategy"'),
    ({"quorum": 1.5}, "quorum"),
    ({"surprise": 1}, "surprise"),
    ({"bundle": None}, "bundle"),
    ({"hyperparams": {"epochs": 3, "lr": 0.05, "batch_size": 16, "seed": 0}}, "hyperparams"),
])
def test_invalid_spec_is_400_naming_the_problem(stack, spec, change, named):
    body = {**spec(), **change}
    r = stack.api("POST", "/api/runs", body, expect=(400,))
    assert named in r["error"]


def test_malformed_json_is_400(stack):
    r = requests.post(stack.host.url("/api/runs"), data="{not json", headers={"x-api-key": stack.scientist_key})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_duplicate_run_id_is_409(stack, spec):
    stack.start_run(spec(run_id="e2e-dup"))
    r = stack.api("POST", "/api/runs", spec(run_id="e2e-dup"), expect=(409,))
    assert "e2e-dup" in r["error"]
    stack.wait_run("e2e-dup", timeout=300)


def test_roles(stack, spec):
    anonymous = requests.post(stack.host.url("/api/runs"), json=spec())
    assert anonymous.status_code == 401 and anonymous.json()["rule"] == "auth.anonymous"
    scientist_on_admin_route = stack.api("POST", "/api/silos", {"name": "sneaky"}, role="scientist", expect=(403,))
    assert scientist_on_admin_route["rule"] == "auth.role" and "admin" in scientist_on_admin_route["message"]
    wrong_key = requests.get(stack.host.url("/api/runs"), headers={"x-api-key": "not-a-key"})
    assert wrong_key.status_code == 401
