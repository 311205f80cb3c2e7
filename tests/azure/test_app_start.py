"""A missing or invalid setting on Azure: the app still starts and every HTTP route answers 503 naming it."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import azure.functions as func
import pytest

from fedfunc.coordinator.services import services
from fedfunc.host.app_loader import load_app

from azure_env import IDENTITY

REPO = Path(__file__).resolve().parents[2]
# What the Functions host passes for a durable client binding; nothing listens there: a misconfigured app
# must answer before it talks to the task hub.
CLIENT_BINDING = json.dumps({"taskHubName": "fedfunc", "creationUrls": {}, "managementUrls": {},
                             "baseUrl": "http://127.0.0.1:9/runtime/webhooks/durabletask",
                             "requiredQueryStringParameters": "", "rpcBaseUrl": "http://127.0.0.1:9/durabletask/"})


@pytest.fixture
def broken_settings(monkeypatch):
    """The table URI missing: what an admin who deleted one app setting would see."""
    for name in [k for k in os.environ if k.startswith("FEDFUNC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FEDFUNC_STORAGE__blobServiceUri", IDENTITY["FEDFUNC_STORAGE__blobServiceUri"])
    services.cache_clear()
    yield
    services.cache_clear()


def test_every_http_route_answers_503_naming_the_setting(broken_settings, caplog):
    app = load_app(REPO)  # imports function_app.py as the Functions host does: it must not raise
    assert "FEDFUNC_STORAGE__tableServiceUri: missing" in caplog.text
    routes = app.of_type("httpTrigger")
    assert len(routes) >= 9
    for f in routes:
        client = {f.client_param: CLIENT_BINDING} if f.client_param else {}
        req = func.HttpRequest(method=f.trigger["methods"][0], url=f"/api/{f.trigger['route']}", body=b"{}",
                               route_params={"run_id": "r1", "name": "s1"})
        resp = asyncio.run(f.fn(req, **client))
        assert resp.status_code == 503, f.name
        assert json.loads(resp.get_body())["error"].startswith(
            "the app is misconfigured: FEDFUNC_STORAGE__tableServiceUri: missing"), f.name
