"""HTTP triggers: request mapping, routes, methods, auth levels, failures."""
from __future__ import annotations

import requests
from host_helpers import FUNCTION_KEY, MASTER_KEY

from fedfunc.host.http import compile_route


def test_request_and_response_mapping(features):
    r = requests.post(features.url("/api/echo/bob/12?q=1"), headers={"x-test": "hi"}, data="payload")
    assert r.status_code == 201 and r.headers["x-reply"] == "yes"
    assert r.json() == {"method": "POST", "route": {"name": "bob", "n": "12"}, "query": {"q": "1"},
                        "header": "hi", "body": "payload"}
    assert requests.get(features.url("/api/echo/ann")).json()["route"] == {"name": "ann"}


def test_response_content_type_is_not_duplicated(features):
    r = requests.get(features.url("/api/typed"))
    assert r.raw.headers.getlist("Content-Type") == ["text/html"] and r.text == "<p>hi</p>"


def test_route_constraints_methods_and_unknown_paths(features):
    assert requests.get(features.url("/api/echo/bob/notint")).status_code == 404
    assert requests.delete(features.url("/api/echo/bob")).status_code == 405
    assert requests.get(features.url("/api/nothing-here")).status_code == 404


def test_disabled_function_is_not_served(features):
    assert requests.get(features.url("/api/disabled")).status_code == 404


def test_user_exception_is_500_and_host_stays_up(features):
    r = requests.get(features.url("/api/crash"))
    assert r.status_code == 500 and "http handler exploded" in r.text
    assert requests.get(features.url("/api/echo/still")).status_code == 201
    assert "http handler exploded" in features.log() and "Traceback" in features.log()


def test_auth_levels_with_keys(features):
    assert requests.get(features.url("/api/secure")).status_code == 401
    assert requests.get(features.url("/api/secure?code=wrong")).status_code == 401
    assert requests.get(features.url(f"/api/secure?code={FUNCTION_KEY}")).text == "function ok"
    assert requests.get(features.url("/api/secure"), headers={"x-functions-key": MASTER_KEY}).status_code == 200
    assert requests.get(features.url(f"/api/admin-only?code={FUNCTION_KEY}")).status_code == 401
    assert requests.get(features.url("/api/admin-only"), headers={"x-functions-key": MASTER_KEY}).text == "admin ok"


def test_route_templates():
    pattern, params = compile_route("items/{id:int}/{*rest}")
    assert params == 2
    assert pattern.fullmatch("items/7/a/b").groupdict() == {"id": "7", "rest": "a/b"}
    assert pattern.fullmatch("items/x/a") is None
    optional, _ = compile_route("orchestrators/{functionName}/{instanceId?}")
    assert optional.fullmatch("orchestrators/f").group("instanceId") is None
    assert optional.fullmatch("orchestrators/f/i1").group("instanceId") == "i1"
