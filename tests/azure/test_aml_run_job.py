"""The warm option on AML (FEDFUNC_AML_SILO_JOBS=per-run) against a fake gateway and a fake inbox: one
long-lived job per silo per run, built like a per-round job; each round's request goes to the inbox once."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError

from fedfunc.azure import naming
from fedfunc.backends.aml_run_job import INBOX_ENV, RUN_ENV, SERVE_COMMAND, SILO_ENV, AmlRunJobBackend
from fedfunc.contracts import SiloJobRequest
from fedfunc.settings import SettingsError, load_settings
from fedfunc.silo.serve import inbox_prefix, request_name

from azure_env import aml_env
from test_aml_backend import CODE, FakeGateway, as_spec, publish, request


class FakeInbox:
    url = "https://orchsa.blob.core.windows.net/inbox"

    def __init__(self):
        self.blobs: dict[str, bytes] = {}

    def upload_blob(self, name, data, overwrite=False):
        if name in self.blobs and not overwrite:
            raise ResourceExistsError("The specified blob already exists.")
        self.blobs[name] = data if isinstance(data, bytes) else data.encode()


@pytest.fixture
def settings(tmp_path):
    return load_settings(aml_env(tmp_path, FEDFUNC_AML_SILO_JOBS="per-run"))


def test_the_run_job_is_a_silo_job_that_serves_its_inbox(settings):
    backend = AmlRunJobBackend(FakeGateway(), settings, FakeInbox(), publish_code=publish,
                               compute_for=lambda silo: f"arc-{silo}")
    job = backend.build_run_job("run-7", "north-eu", "ab" * 32)
    spec = as_spec(job)
    assert job.name == naming.run_job_name("run-7", "north-eu") != naming.job_name("run-7", 3, "north-eu")
    assert spec["compute"] == "azureml:arc-north-eu" and spec["identity"] == {"type": "managed_identity"}
    assert spec["environment"] == "azureml:fedfunc-silo:3" and "code" not in spec["component"]  # no AML code asset
    assert spec["component"]["command"] == SERVE_COMMAND
    assert spec["environment_variables"] == {INBOX_ENV: FakeInbox.url, RUN_ENV: "run-7", SILO_ENV: "north-eu"}
    assert set(spec["inputs"]) == {"code", "data", "policy", "bundle"}  # each round's model is read from its URL
    assert spec["inputs"]["bundle"]["path"] == f"azureml://datastores/fedfunc_bundles/paths/{'ab' * 32}.fedbundle"
    assert spec["inputs"]["code"]["path"] == f"azureml://datastores/fedfunc_code/paths/{CODE}/"
    assert SERVE_COMMAND.startswith('PYTHONPATH="${{inputs.code}}" python -m fedfunc silo-serve ')
    assert spec["inputs"]["data"]["mode"] == "ro_mount" and spec["outputs"]["outbox"]["mode"] == "rw_mount"
    assert spec["component"]["tags"] == {"fedfunc.run": "run-7", "fedfunc.silo": "north-eu"}


def test_each_round_goes_to_the_inbox_once_and_one_job_serves_the_run(settings):
    gw, inbox = FakeGateway(), FakeInbox()
    backend = AmlRunJobBackend(gw, settings, inbox, publish_code=publish)
    first = backend.submit(request(round_=3))
    assert backend.submit(request(round_=4)) == first == naming.run_job_name("run-7", "north-eu")
    retried = request(round_=3).model_copy(update={"ticket": "a.later.ticket"})
    assert backend.submit(retried) == first
    assert gw.created == [first]
    prefix = inbox_prefix("run-7", "north-eu")
    assert sorted(inbox.blobs) == [prefix + request_name(3), prefix + request_name(4)]
    assert SiloJobRequest.model_validate_json(inbox.blobs[prefix + request_name(3)]) == request(round_=3)


def test_per_round_jobs_stay_the_default_and_the_mode_is_checked(tmp_path):
    assert load_settings(aml_env(tmp_path)).aml.silo_jobs == "per-round"
    with pytest.raises(SettingsError, match="FEDFUNC_AML_SILO_JOBS"):
        load_settings(aml_env(tmp_path, FEDFUNC_AML_SILO_JOBS="per-epoch"))
