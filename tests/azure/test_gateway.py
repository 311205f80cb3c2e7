"""The real gateway, offline: ARM calls over a scripted HTTP transport, MLClient replaced by a stub.

This checks request shapes, polling and error mapping against the ARM REST contract as documented;
it is not evidence that Azure accepts these calls (no subscription was available).
"""
from __future__ import annotations

import io
import json

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport

from fedfunc.azure.gateway import AzureCallError, AzureMLGateway, JobExists
from fedfunc.settings import load_settings

from azure_env import aml_env

RID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/flsilo"


class Script(requests.adapters.HTTPAdapter):
    def __init__(self, *responses):
        super().__init__()
        self.responses, self.seen = list(responses), []

    def send(self, request, **kwargs):
        self.seen.append(request)
        status, body = self.responses.pop(0)
        content = json.dumps(body).encode() if body is not None else b""
        raw = urllib3.HTTPResponse(body=io.BytesIO(content), status=status, preload_content=False,
                                   headers={"content-type": "application/json", "content-length": str(len(content))})
        return self.build_response(request, raw)

    def close(self):
        pass


class Token:
    def get_token(self, *scopes, **kwargs):
        assert scopes == ("https://management.azure.com/.default",)
        return AccessToken("t0ken", 4102444800)


def gateway(tmp_path, *responses):
    script, session = Script(*responses), requests.Session()
    session.mount("https://", script)
    gw = AzureMLGateway(load_settings(aml_env(tmp_path)).aml, Token(),
                        transport=RequestsTransport(session=session), poll_seconds=0)
    return gw, script


def test_put_waits_for_provisioning(tmp_path):
    gw, script = gateway(tmp_path, (202, None), (200, {"properties": {"provisioningState": "Creating"}}),
                         (200, {"name": "flsilo", "properties": {"provisioningState": "Succeeded"}}))
    assert gw.put_resource(RID, "2023-05-01", {"location": "westeurope"})["name"] == "flsilo"
    put = script.seen[0]
    assert put.method == "PUT" and put.url == f"https://management.azure.com{RID}?api-version=2023-05-01"
    assert json.loads(put.body) == {"location": "westeurope"}
    assert put.headers["Authorization"] == "Bearer t0ken"
    assert [r.method for r in script.seen] == ["PUT", "GET", "GET"]


def test_arm_error_carries_azures_message_and_code(tmp_path):
    gw, _ = gateway(tmp_path, (403, {"error": {"code": "AuthorizationFailed", "message": "no write on rg"}}))
    with pytest.raises(AzureCallError, match="no write on rg") as e:
        gw.put_resource(RID, "2023-05-01", {})
    assert (e.value.status, e.value.code) == (403, "AuthorizationFailed")


def test_failed_provisioning_is_an_error(tmp_path):
    gw, _ = gateway(tmp_path, (201, {"properties": {"provisioningState": "Failed"}}))
    with pytest.raises(AzureCallError, match="provisioning ended Failed"):
        gw.put_resource(RID, "2024-10-01", {})


def test_get_missing_is_none(tmp_path):
    gw, _ = gateway(tmp_path, (404, {"error": {"code": "ResourceNotFound", "message": "gone"}}))
    assert gw.get_resource(RID, "2023-05-01") is None


class Jobs:
    def __init__(self, error=None, status="Running"):
        self.error, self.status, self.canceled = error, status, []

    def create_or_update(self, job):
        if self.error:
            raise self.error
        return job

    def get(self, name):
        if self.status is None:
            raise ResourceNotFoundError("no such job")
        return type("J", (), {"status": self.status})()

    def begin_cancel(self, name):
        self.canceled.append(name)
        return type("P", (), {"result": lambda self, timeout=None: None})()


def with_jobs(tmp_path, jobs):
    gw, _ = gateway(tmp_path)
    gw._ml_client = type("ML", (), {"jobs": jobs})()
    return gw


def http_error(status, message):
    e = HttpResponseError(message=message)
    e.status_code = status
    return e


def test_job_conflict_and_refusal(tmp_path):
    with pytest.raises(JobExists):
        with_jobs(tmp_path, Jobs(http_error(409, "exists"))).create_job(type("Job", (), {"name": "j"})())
    with pytest.raises(AzureCallError, match="Compute fl-x not found") as e:
        with_jobs(tmp_path, Jobs(http_error(400, "Compute fl-x not found"))).create_job(type("Job", (), {"name": "j"})())
    assert not isinstance(e.value, JobExists)


@pytest.mark.parametrize("status,canceled", [("Running", True), ("Completed", False), (None, False)])
def test_cancel_only_live_jobs(tmp_path, status, canceled):
    jobs = Jobs(status=status)
    with_jobs(tmp_path, jobs).cancel_job("j")
    assert jobs.canceled == (["j"] if canceled else [])


def test_gateway_needs_aml_settings():
    with pytest.raises(ValueError, match="FEDFUNC_JOB_BACKEND"):
        AzureMLGateway.from_settings(load_settings({"FEDFUNC_STORAGE": "UseDevelopmentStorage=true"}))
