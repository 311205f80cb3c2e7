"""The local stack runs the host with keys by default, and Azurite keeps the ports it bound."""
from __future__ import annotations

import json

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from fedfunc.azurite import Azurite
from fedfunc.devstack import DevStack


def test_azurite_binds_port_0_once_and_keeps_the_ports_it_reported(tmp_path):
    az = Azurite(tmp_path / "az")
    assert json.loads((tmp_path / "az" / "accounts.json").read_text())["blob_port"] is None
    with az:
        first = az.orchestrator
        BlobServiceClient.from_connection_string(first.connection_string).create_container("kept")
    with Azurite(tmp_path / "az") as again:  # a restart binds the same ports: handed-out URLs stay valid
        assert again.orchestrator == first
        names = [c.name for c in BlobServiceClient.from_connection_string(first.connection_string).list_containers()]
        assert names == ["kept"]


def test_devstack_host_refuses_anonymous_calls_and_opens_with_its_master_key(tmp_path, monkeypatch):
    with DevStack(tmp_path / "stack") as stack:
        routes = [("GET", "/runtime/webhooks/durabletask/instances"), ("GET", "/admin/host/status"),
                  ("GET", "/runtime/webhooks/eventgrid/subscriptions"), ("POST", "/runtime/webhooks/eventgrid"),
                  ("PUT", "/admin/eventgrid/topics/fedfunc-events")]
        for method, path in routes:
            assert requests.request(method, stack.host.url(path)).status_code == 401, path
        assert "refused GET /admin/host/status from 127.0.0.1" in stack.host.log()
        listed = stack.api("GET", "/runtime/webhooks/durabletask/instances", role=None)
        assert isinstance(listed, list)
        topic = stack.topic("fedfunc-events")
        assert topic["endpoint"] == stack.host.url("/eventgrid/topics/fedfunc-events/api/events")

        from fedfunc.host import subscriptions  # app code in another process: FEDFUNC_HOST_URL + master key
        monkeypatch.setenv("FEDFUNC_HOST_URL", stack.host.origin)
        monkeypatch.setenv("FEDFUNC_HOST_MASTER_KEY", stack.master_key)
        assert isinstance(subscriptions.list_subscriptions(), list)
        monkeypatch.setenv("FEDFUNC_HOST_MASTER_KEY", "wrong")
        with pytest.raises(RuntimeError, match=": 401 "):
            subscriptions.list_subscriptions()
