"""The AML silo job backend against a fake gateway: the job spec, idempotent submission, errors."""
from __future__ import annotations

import io

import pytest
import yaml

from fedfunc.azure import naming
from fedfunc.azure.gateway import AzureCallError, JobExists
from fedfunc.contracts import SiloJobRequest
from fedfunc.backends.aml import COMMAND, REQUEST_ENV, AmlSiloJobBackend, backend_from_settings, model_path
from fedfunc.settings import load_settings

from azure_env import aml_env


class FakeGateway:
    """Replaces Azure at the gateway boundary and records what the backend asked for."""

    def __init__(self, create_error: Exception | None = None):
        self.jobs: dict[str, object] = {}
        self.created, self.canceled = [], []
        self.create_error = create_error

    def job_status(self, name):
        return "Running" if name in self.jobs else None

    def create_job(self, job):
        self.created.append(job.name)
        if self.create_error:
            raise self.create_error
        self.jobs[job.name] = job
        return job.name

    def cancel_job(self, name):
        self.canceled.append(name)


@pytest.fixture
def settings(tmp_path):
    return load_settings(aml_env(tmp_path, FEDFUNC_AML_CODE="azureml:fedfunc-bundle:4"))


def request(silo="north-eu", round_=3) -> SiloJobRequest:
    return SiloJobRequest(
        run_id="run-7", round=round_, silo=silo, nonce="n0nce", task="digits",
        model_url="https://orchsa.blob.core.windows.net/models/run-7/round-0003/global.safetensors",
        model_sha256="ab" * 32, outbox_prefix=f"runs/run-7/rounds/{round_:04d}/silos/{silo}/",
        ticket="signed.ticket", bundle="cd" * 32)


def as_spec(job) -> dict:
    """What the SDK sends, via its own public serializer (job YAML)."""
    buf = io.StringIO()
    job.dump(buf)
    return yaml.safe_load(buf.getvalue())


def test_job_spec(settings):
    backend = AmlSiloJobBackend(FakeGateway(), settings, compute_for=lambda silo: f"arc-{silo}")
    job = backend.build_job(request())
    spec = as_spec(job)
    assert spec["type"] == "command" and job.experiment_name == "fedfunc-run-7"
    assert job.name == spec["component"]["name"] == naming.job_name("run-7", 3, "north-eu")
    assert spec["compute"] == "azureml:arc-north-eu"
    assert spec["identity"] == {"type": "managed_identity"}
    assert spec["component"]["code"] == "azureml:fedfunc-bundle:4"
    assert spec["environment"] == "azureml:fedfunc-silo:3"
    assert spec["component"]["command"] == COMMAND
    assert spec["inputs"] == {
        "data": {"type": "uri_folder", "mode": "ro_mount", "path": "azureml://datastores/north_eu_data/paths/"},
        "model": {"type": "uri_file", "mode": "download",
                  "path": "azureml://datastores/fedfunc_models/paths/run-7/round-0003/global.safetensors"},
        "bundle": {"type": "uri_file", "mode": "download",
                   "path": f"azureml://datastores/fedfunc_bundles/paths/{'cd' * 32}.fedbundle"},
        "policy": {"type": "uri_file", "mode": "download",
                   "path": "azureml://datastores/north_eu_policy/paths/policy.json"},
    }
    assert spec["outputs"] == {"outbox": {"type": "uri_folder", "mode": "rw_mount",
                                          "path": "azureml://datastores/north_eu_outbox/paths/"}}
    assert spec["component"]["tags"] == job.tags == {"fedfunc.run": "run-7", "fedfunc.round": "3", "fedfunc.silo": "north-eu"}
    assert SiloJobRequest.model_validate_json(spec["environment_variables"][REQUEST_ENV]) == request()


def test_command_is_the_runner_contract():
    assert COMMAND == (
        'printf %s "$FEDFUNC_SILO_JOB_REQUEST" > request.json && python -m fedfunc silo-job --aml '
        "--request request.json --data ${{inputs.data}} --model ${{inputs.model}} --bundle ${{inputs.bundle}} "
        "--policy ${{inputs.policy}} --outbox ${{outputs.outbox}}")


def test_job_names_are_deterministic_and_distinct():
    assert naming.job_name("run-7", 3, "a") == naming.job_name("run-7", 3, "a")
    names = {naming.job_name(r, n, s) for r in ("run.1", "run_1") for n in (1, 11) for s in ("a", "a-1")}
    assert len(names) == 8
    assert all(len(n) <= 255 and n[0].isalpha() for n in names)


def test_submit_twice_starts_one_job(settings):
    gw = FakeGateway()
    backend = AmlSiloJobBackend(gw, settings)
    first, second = backend.submit(request()), backend.submit(request())
    assert first == second == naming.job_name("run-7", 3, "north-eu")
    assert gw.created == [first]
    assert gw.jobs[first].compute == naming.compute("north-eu")


def test_submit_race_conflict_counts_as_submitted(settings):
    gw = FakeGateway(create_error=JobExists("already exists", 409))
    assert AmlSiloJobBackend(gw, settings).submit(request()) == naming.job_name("run-7", 3, "north-eu")


def test_submission_error_fails_only_that_silo_with_amls_message(settings):
    from fedfunc.coordinator.rounds import start_silo_job

    gw = FakeGateway(create_error=AzureCallError("Compute fl-north-eu not found in workspace", 400, "UserError"))
    result = start_silo_job(AmlSiloJobBackend(gw, settings), request())
    assert result.silo == "north-eu" and result.job_id is None
    assert "Compute fl-north-eu not found in workspace" in result.error


def test_cancel_goes_to_the_gateway(settings):
    gw = FakeGateway()
    AmlSiloJobBackend(gw, settings).cancel("job-1")
    assert gw.canceled == ["job-1"]


@pytest.mark.parametrize("url,path", [
    ("https://orchsa.blob.core.windows.net/models/r1/round-0000/global.safetensors", "r1/round-0000/global.safetensors"),
    ("http://127.0.0.1:10000/orch/models/r%201/round-0002/global.safetensors?sv=x&sig=y", "r 1/round-0002/global.safetensors"),
])
def test_model_path(url, path):
    assert model_path(url) == path


def test_model_outside_models_is_refused():
    with pytest.raises(ValueError, match="model_url"):
        model_path("https://orchsa.blob.core.windows.net/runs/r1/spec.json")


def test_aml_backend_needs_aml_settings():
    with pytest.raises(ValueError, match="FEDFUNC_JOB_BACKEND"):
        AmlSiloJobBackend(FakeGateway(), load_settings({"FEDFUNC_STORAGE": "UseDevelopmentStorage=true"}))


def test_one_setting_switches_the_backend(tmp_path):
    """Only FEDFUNC_JOB_BACKEND changes; the orchestrator's services pick the implementation."""
    from fedfunc.coordinator.services import Services

    azure = Services(load_settings(aml_env(tmp_path)))
    assert isinstance(azure.backend, AmlSiloJobBackend)
    assert type(azure.provisioner).__name__ == "AzureProvisioner"
    local = Services(load_settings({**aml_env(tmp_path), "FEDFUNC_JOB_BACKEND": "local"}))
    assert type(local.backend).__module__ == "fedfunc.backends.local"
    assert type(local.provisioner).__name__ == "LocalProvisioner"


def test_production_wiring_builds_offline(tmp_path):
    backend = backend_from_settings(load_settings(aml_env(tmp_path)))
    assert type(backend.gateway).__name__ == "AzureMLGateway"


class FinishingGateway(FakeGateway):
    """A job that runs for ``polls`` status checks, then ends in ``final``."""

    def __init__(self, final: str, polls: int = 2):
        super().__init__()
        self.final, self.polls = final, polls

    def job_status(self, name):
        if name not in self.jobs:
            return None
        self.polls -= 1
        return "Running" if self.polls > 0 else self.final


def test_smoke_job_spec_runs_the_smoke_command_with_the_silos_mounts_and_identity(settings):
    backend = AmlSiloJobBackend(FakeGateway(), settings)
    spec = as_spec(backend.build_smoke_job("north-eu", "onboard:north-eu-1",
                                           "https://orch.blob.core.windows.net/models"))
    assert spec["compute"] == f"azureml:{naming.compute('north-eu')}"
    assert spec["identity"]["type"] == "managed_identity"
    assert spec["inputs"]["data"]["path"] == f"azureml://datastores/{naming.datastore('north-eu', 'data')}/paths/"
    assert spec["inputs"]["data"]["mode"] == "ro_mount" and spec["outputs"]["outbox"]["mode"] == "rw_mount"
    assert "model" not in spec["inputs"]  # a smoke job touches no model and no training data
    command = " ".join(spec["component"]["command"].split())
    assert command.startswith("python -m fedfunc silo-smoke --aml --id onboard:north-eu-1 --silo north-eu")
    assert "${{inputs.data}}" in command and "${{outputs.outbox}}" in command


@pytest.mark.parametrize("final, ok", [("Completed", True), ("Failed", False)])
def test_smoke_waits_for_the_job_and_submits_once(settings, final, ok):
    gateway = FinishingGateway(final)
    backend = AmlSiloJobBackend(gateway, settings)
    result = backend.smoke("north-eu", "s1", "https://orch.blob.core.windows.net/models", poll=0)
    assert result["ok"] is ok and result["status"] == final and len(gateway.created) == 1
    gateway.polls = 1  # the retried activity finds the same job instead of submitting another
    assert backend.smoke("north-eu", "s1", "https://orch.blob.core.windows.net/models", poll=0)["ok"] is ok
    assert len(gateway.created) == 1


def test_smoke_that_outlives_its_wait_raises_so_the_activity_retries(settings):
    backend = AmlSiloJobBackend(FinishingGateway("Completed", polls=10**6), settings)
    with pytest.raises(TimeoutError, match="still Running"):
        backend.smoke("north-eu", "s2", "https://orch.blob.core.windows.net/models", timeout=0, poll=0)
