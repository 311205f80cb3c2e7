"""The one narrow interface to Azure: AML jobs through ``MLClient``, everything else as idempotent ARM PUTs.

ARM PUT is create-or-update, so every onboarding step built on ``put_resource`` is an ensure-step:
running it twice leaves the same resource. No subscription was available while this was written:
the real gateway is built to the azure-ai-ml and ARM REST contracts and checked offline with a fake
HTTP transport only.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline import policies
from azure.core.rest import HttpRequest
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

from fedfunc.settings import AmlSettings

ARM = "https://management.azure.com"
TERMINAL_JOB_STATES = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}
_TERMINAL_PROVISIONING = {"Succeeded", "Failed", "Canceled"}


class AzureCallError(RuntimeError):
    """Azure refused a call; ``str()`` is Azure's own message, ``code`` its error code when it gave one."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class JobExists(AzureCallError):
    """A job with this name was already submitted (our names are deterministic, so: same job)."""


class AzureGateway(Protocol):
    def job_status(self, name: str) -> str | None:
        """The AML job's status, or None if no job has that name."""

    def create_job(self, job: Any) -> str:
        """Submit an ``azure.ai.ml`` job; return its name. Raises ``JobExists`` or ``AzureCallError``."""

    def cancel_job(self, name: str) -> None:
        """Cancel a running job; unknown or finished jobs are ignored."""

    def put_resource(self, resource_id: str, api_version: str, body: dict) -> dict:
        """Create or update an ARM resource and wait until it is provisioned; return it."""

    def get_resource(self, resource_id: str, api_version: str) -> dict | None:
        """The ARM resource, or None if it does not exist."""


def _message(e: HttpResponseError) -> str:
    return (e.error.message if e.error is not None and e.error.message else e.message) or str(e)


def _state(resource: dict | None) -> str:
    """ARM provisioning state; an empty 202 body or a not-yet-visible resource is still in progress."""
    if not resource:
        return "Accepted"
    return resource.get("properties", {}).get("provisioningState", "Succeeded")


class AzureMLGateway:
    """The real gateway: ``MLClient`` for jobs, ARM REST (``azure-core``) for resources; identity, no keys."""

    def __init__(self, settings: AmlSettings, credential, *, transport=None, poll_seconds: float = 10,
                 timeout_seconds: float = 1800):
        self.settings, self.credential = settings, credential
        self._arm = PipelineClient(ARM, transport=transport, policies=[
            policies.RequestIdPolicy(), policies.UserAgentPolicy("fedfunc"), policies.RetryPolicy(),
            ARMChallengeAuthenticationPolicy(credential, f"{ARM}/.default")])
        self._poll, self._timeout = poll_seconds, timeout_seconds
        self._ml_client = None

    @classmethod
    def from_settings(cls, settings) -> "AzureMLGateway":
        """The app's gateway: its managed identity (``DefaultAzureCredential``) on the configured workspace."""
        from fedfunc.storage import credential
        if settings.aml is None:
            raise ValueError("FEDFUNC_JOB_BACKEND: Azure calls need FEDFUNC_JOB_BACKEND=aml and the FEDFUNC_AML_* settings")
        return cls(settings.aml, credential())

    @property
    def _ml(self):
        if self._ml_client is None:
            from azure.ai.ml import MLClient
            s = self.settings
            self._ml_client = MLClient(self.credential, s.subscription_id, s.resource_group, s.workspace)
        return self._ml_client

    def job_status(self, name: str) -> str | None:
        try:
            return self._ml.jobs.get(name).status
        except ResourceNotFoundError:
            return None

    def create_job(self, job) -> str:
        try:
            return self._ml.jobs.create_or_update(job).name
        except ResourceExistsError as e:
            raise JobExists(_message(e), 409) from None
        except HttpResponseError as e:
            cls = JobExists if e.status_code == 409 else AzureCallError
            raise cls(_message(e), e.status_code, e.error.code if e.error else None) from None

    def cancel_job(self, name: str) -> None:
        status = self.job_status(name)
        if status is None or status in TERMINAL_JOB_STATES:
            return
        self._ml.jobs.begin_cancel(name).result(timeout=120)

    def _send(self, method: str, resource_id: str, api_version: str, body: dict | None = None):
        request = HttpRequest(method, f"{ARM}{resource_id}", params={"api-version": api_version}, json=body)
        response = self._arm.send_request(request)
        if response.status_code == 404 and method == "GET":
            return None
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {}
            raise AzureCallError(error.get("message") or response.text(), response.status_code, error.get("code"))
        return response.json() if response.content else {}

    def put_resource(self, resource_id: str, api_version: str, body: dict) -> dict:
        resource = self._send("PUT", resource_id, api_version, body)
        deadline = time.monotonic() + self._timeout
        while _state(resource) not in _TERMINAL_PROVISIONING:
            if time.monotonic() > deadline:
                raise AzureCallError(f"{resource_id} still provisioning after {self._timeout:.0f}s")
            time.sleep(self._poll)
            resource = self._send("GET", resource_id, api_version)
        if _state(resource) != "Succeeded":
            raise AzureCallError(f"{resource_id} provisioning ended {_state(resource)}", code=_state(resource))
        return resource

    def get_resource(self, resource_id: str, api_version: str) -> dict | None:
        return self._send("GET", resource_id, api_version)
