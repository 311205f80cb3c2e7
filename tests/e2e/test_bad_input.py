"""Bad run requests and bundle uploads get a 400 naming the field, rule or file; the API's roles answer 401/403."""
from __future__ import annotations

import pytest
import requests



@pytest.mark.parametrize("change, named", [
    ({"rounds": 0}, "rounds"),
    ({"task": "imagenet"}, "imagenet"),
    ({"silos": ["site-1", "nowhere"]}, "nowhere"),
    ({"silos": ["site-1", "a/b"]}, "'a/b' is not a silo name"),
    ({"silos": ["site-1", "A'B"]}, "is not a silo name"),
    ({"bundle": "not-a-hash"}, "bundle"),
    ({"strategy": "fedmystery"}, "unknown aggregation strategy 'fedmystery'"),
    ({"strategy": {"name": "fedadam", "options": {"eta": -1}}}, "strategy.options: Value error, eta"),
    ({"strategy": {"name": "trimmed_mean", "options": {"beta": 0.5}}}, "beta: Input should be less than 0.5"),
    ({"strategy": {"name": "krum", "options": {"f": 1}}}, "krum needs at least 5 updates"),
    ({"strategy": "fedprox"}, "the signed bundle must set proximal_mu > 0"),
    ({"aggregator": "fedavg"}, 'aggregator: Value error, renamed to "strategy"'),
    ({"quorum": 1.5}, "quorum"),
    ({"surprise": 1}, "surprise"),
    ({"bundle": None}, "bundle"),
    ({"bundle": "0" * 64}, "no bundle " + "0" * 64),
    ({"bundle": "digits"}, "bundle"),
    ({"evaluators": ["site-1"]}, "evaluators"),
    ({"evaluators": ["nowhere"]}, "nowhere"),
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


@pytest.mark.parametrize("route", ["/api/runs", "/api/silos"])
def test_deeply_nested_json_is_400(stack, route):
    r = requests.post(stack.host.url(route), data="[" * 100_000 + "]" * 100_000,
                      headers={"x-api-key": stack.admin_key})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]


@pytest.mark.parametrize("method, route", [
    ("GET", "/api/runs/%27%22"), ("POST", "/api/runs/%00/cancel"), ("GET", "/api/silos/%27/onboarding"),
    ("POST", "/api/silos/Bad%20Name/disable"), ("DELETE", "/api/silos/" + "x" * 300)])
def test_names_no_run_or_silo_can_have_are_404_looked_up_nowhere(stack, method, route):
    r = requests.request(method, stack.host.url(route), headers={"x-api-key": stack.admin_key})
    assert r.status_code == 404 and r.json()["error"].startswith("no ")


def upload(stack, data: bytes) -> requests.Response:
    return requests.post(stack.host.url("/api/bundles"), data=data, timeout=60,
                         headers={"x-api-key": stack.scientist_key, "content-type": "application/octet-stream"})


def test_a_bundle_over_the_configured_bound_is_refused_at_the_api(stack):
    bound = int(float(stack.host.env["FEDFUNC_MAX_BUNDLE_MB"]) * 2**20)
    r = upload(stack, b"\0" * (bound + 1))
    assert r.status_code == 400 and r.json()["rule"] == "bundle.size" and "FEDFUNC_MAX_BUNDLE_MB" in r.json()["error"]


def test_a_bundle_that_does_not_match_its_signature_is_refused_at_the_api(stack):
    import io
    import zipfile

    good = stack.sign("digits")
    src, out = zipfile.ZipFile(io.BytesIO(good)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            z.writestr(info, data + b"# edited\n" if info.filename == "files/task.py" else data)
    r = upload(stack, out.getvalue())
    assert r.status_code == 400 and r.json()["rule"] == "bundle.file_hash" and r.json()["object"] == "task.py"
    assert upload(stack, b"PK not really").json()["rule"] == "bundle.format"
    stored = upload(stack, good)
    assert stored.status_code in (200, 201)
    shown = stack.api("GET", f"/api/bundles/{stored.json()['bundle']}")
    assert shown["task"] == "digits" and "task.py" in shown["files"]
    assert "no bundle" in stack.api("GET", "/api/bundles/" + "0" * 64, expect=(404,))["error"]
