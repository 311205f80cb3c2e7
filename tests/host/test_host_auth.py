"""Every host route (all but the app's own HTTP API) refuses anonymous and wrong-key calls with 401 and
logs the refusal; the right key opens it. The routes are read from the host's router, so a route added
later is covered without touching this file."""
from __future__ import annotations

import asyncio
import logging
import re
import threading

import pytest
import requests
from host_helpers import APPS

from fedfunc.host.keys import read_keys
from fedfunc.host.runtime import Host

SYSTEM = {"/runtime/webhooks/durabletask/": "durabletask_extension",
          "/runtime/webhooks/eventgrid": "eventgrid_extension",
          "/runtime/webhooks/blobs": "blobs_extension"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The standard app on an in-process host (so its router can be read), on its own loop thread."""
    mp = pytest.MonkeyPatch()
    for setting in ("FEDFUNC_HOST_URL", "FEDFUNC_HOST_MASTER_KEY", "FEDFUNC_HOST_FUNCTION_KEY"):
        mp.delenv(setting, raising=False)  # restored afterwards: the host sets FEDFUNC_HOST_URL
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    host = Host(APPS / "standard", port=0, state=tmp_path_factory.mktemp("auth") / "state.sqlite")
    asyncio.run_coroutine_threadsafe(host.start(), loop).result(60)
    host.keys.topic_key("auth-topic")
    yield host
    asyncio.run_coroutine_threadsafe(host.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    mp.undo()


def concrete(host: Host, path: str, rpc: str = "not-the-secret") -> str:
    path = path.replace("{rpc}", rpc).replace("{topic}", "auth-topic")
    return host.origin + re.sub(r"\{[^}]+\}", "x", path)


def credentials(host: Host, path: str) -> tuple[list[dict], list[dict]]:
    """(headers that must open the route, headers that must not) by the documented rules."""
    stored = read_keys(host.keys_path)
    master, system = {"x-functions-key": stored["masterKey"]}, stored["systemKeys"]
    others = [{"x-functions-key": k} for k in (stored["functionKeys"]["default"], *system.values())]
    if path.startswith("/eventgrid/topics/"):
        return [{"aeg-sas-key": stored["topicKeys"]["auth-topic"]}], [master, *others]
    for prefix, name in SYSTEM.items():
        if path.startswith(prefix) and "/subscriptions" not in path:
            own = {"x-functions-key": system[name]}
            return [master, own], [o for o in others if o != own]
    return [master], others


def test_the_router_lists_every_kind_of_host_route(live):
    routes = set(live.routes.host_routes())
    assert {("GET", "/admin/host/status"), ("POST", "/runtime/webhooks/eventgrid"),
            ("POST", "/runtime/webhooks/blobs"), ("GET", "/runtime/webhooks/durabletask/instances/{id}"),
            ("GET", "/durabletask/{rpc}/instances/{id}"), ("PUT", "/runtime/webhooks/eventgrid/subscriptions/{name}"),
            ("POST", "/eventgrid/topics/{topic}/api/events"), ("PUT", "/admin/eventgrid/topics/{topic}")} <= routes
    assert all(not path.startswith("/api") for _, path in routes)


def test_anonymous_and_wrong_keys_get_401_on_every_host_route(live, caplog):
    caplog.set_level(logging.WARNING, logger="fedfunc.host")
    for method, path in live.routes.host_routes():
        url = concrete(live, path)
        assert requests.request(method, url).status_code == 401, (method, path)
        for wrong in ({"x-functions-key": "wrong"}, {"aeg-sas-key": "wrong"}):
            assert requests.request(method, url, headers=wrong).status_code == 401, (method, path, wrong)
        assert requests.request(method, url, params={"code": "wrong"}).status_code == 401, (method, path)
        _, refused = credentials(live, path)
        for headers in refused:
            assert requests.request(method, url, headers=headers).status_code == 401, (method, path, headers)
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert any("GET /admin/host/status from 127.0.0.1" in line for line in refusals), refusals
    assert "wrong" not in "".join(refusals)  # a presented key is never logged


def test_the_right_key_opens_every_host_route(live):
    secret = live.management.secret
    for method, path in live.routes.host_routes():
        url = concrete(live, path, rpc=secret)
        opened, _ = credentials(live, path)
        if path.startswith("/durabletask/"):
            assert requests.request(method, url).status_code != 401, (method, path)
            continue
        for headers in opened:
            assert requests.request(method, url, headers=headers).status_code != 401, (method, path, headers)
            code = headers.get("x-functions-key")
            if code:  # the same key as ?code=
                assert requests.request(method, url, params={"code": code}).status_code != 401, (method, path)


def test_unknown_host_paths_need_the_master_key_before_404(live):
    for path in ("/admin/nothing", "/runtime/webhooks/nothing", "/durabletask/x", "/eventgrid/x"):
        assert requests.get(live.origin + path).status_code == 401, path
        master = {"x-functions-key": read_keys(live.keys_path)["masterKey"]}
        assert requests.get(live.origin + path, headers=master).status_code == 404, path
    assert requests.get(live.origin + "/api/nothing-here").status_code == 404  # the app's namespace: its own rules


def test_keys_file_is_private_and_check_status_urls_carry_the_durabletask_key(live):
    assert live.keys_path.stat().st_mode & 0o777 == 0o600
    r = requests.post(live.origin + "/api/orchestrators/hello_orchestrator")
    assert r.status_code == 202
    url = r.json()["statusQueryGetUri"]
    assert f"code={read_keys(live.keys_path)['systemKeys']['durabletask_extension']}" in url
    assert requests.get(url).status_code in (200, 202)
    assert requests.get(url.split("?")[0]).status_code == 401
