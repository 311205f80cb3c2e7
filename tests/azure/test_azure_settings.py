"""Settings fail at start, naming the setting; storage clients follow the connection kind."""
from __future__ import annotations

import pytest

from fedfunc.settings import APP_ROOT, SettingsError, load_settings
from fedfunc.storage import blob_service, read_url_for, table_service

from azure_env import IDENTITY, KEYED, aml_env


def test_local_defaults():
    s = load_settings({"FEDFUNC_STORAGE": KEYED})
    assert s.job_backend == "local" and s.aml is None and not s.storage.uses_identity


def test_aml_complete(tmp_path):
    s = load_settings(aml_env(tmp_path))
    assert s.job_backend == "aml" and s.aml.workspace == "mlw-fl" and s.storage.uses_identity
    assert s.storage.blob_service_uri == "https://orch.blob.core.windows.net"


@pytest.mark.parametrize("name,value,fragment", [
    ("FEDFUNC_AML_WORKSPACE", None, "FEDFUNC_AML_WORKSPACE: missing"),
    ("FEDFUNC_AML_WORKSPACE", "  ", "FEDFUNC_AML_WORKSPACE: missing"),
    ("FEDFUNC_AML_SUBSCRIPTION_ID", "my-sub", "FEDFUNC_AML_SUBSCRIPTION_ID"),
    ("FEDFUNC_AML_ENVIRONMENT", "fedfunc-silo:latest", "FEDFUNC_AML_ENVIRONMENT"),
    ("FEDFUNC_AML_ENVIRONMENT", "fedfunc-silo", "FEDFUNC_AML_ENVIRONMENT"),
    ("FEDFUNC_AML_CODE", "/no/such/folder", "FEDFUNC_AML_CODE"),
    ("FEDFUNC_AML_CODE", "azureml:fedfunc-bundle:7", "FEDFUNC_AML_CODE: .*workspace storage"),
    ("FEDFUNC_AML_MODELS_DATASTORE", "fedfunc-models", "FEDFUNC_AML_MODELS_DATASTORE"),
    ("FEDFUNC_AML_CODE_DATASTORE", "fedfunc code", "FEDFUNC_AML_CODE_DATASTORE"),
    ("FEDFUNC_ORCHESTRATOR_KEY", "@Microsoft.KeyVault(VaultName=kv;SecretName=k)",
     "FEDFUNC_ORCHESTRATOR_KEY: .*Key Vault reference did not resolve"),
    ("FEDFUNC_AML_FUNCTION_APP_ID", "fl-func", "FEDFUNC_AML_FUNCTION_APP_ID"),
    ("FEDFUNC_JOB_BACKEND", "cloud", "FEDFUNC_JOB_BACKEND"),
])
def test_bad_aml_setting_is_named(tmp_path, name, value, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(aml_env(tmp_path, **{name: value}))


def test_relative_code_folder_is_the_apps_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(aml_env(tmp_path, FEDFUNC_AML_CODE="fedfunc")).aml.code == str(APP_ROOT / "fedfunc")
    (tmp_path / "jobcode").mkdir()  # in the working directory, not in the app
    with pytest.raises(SettingsError, match="FEDFUNC_AML_CODE: .*'jobcode' does not exist in the app"):
        load_settings(aml_env(tmp_path, FEDFUNC_AML_CODE="jobcode"))


def test_datastore_names_as_main_bicep_writes_them(tmp_path):
    """Letters, digits and underscores (the pattern once lacked its brackets and refused every name)."""
    aml = load_settings(aml_env(tmp_path, FEDFUNC_AML_MODELS_DATASTORE="fedfunc_models",
                                FEDFUNC_AML_CODE_DATASTORE="fedfunc_code")).aml
    assert (aml.models_datastore, aml.code_datastore) == ("fedfunc_models", "fedfunc_code")


@pytest.mark.parametrize("env,fragment", [
    ({}, "FEDFUNC_STORAGE__blobServiceUri: missing"),
    ({"FEDFUNC_STORAGE__blobServiceUri": "https://a.blob.core.windows.net"}, "FEDFUNC_STORAGE__tableServiceUri: missing"),
    ({**IDENTITY, "FEDFUNC_STORAGE": KEYED}, "not both"),
    ({"FEDFUNC_STORAGE": "AccountName=orch"}, "FEDFUNC_STORAGE: connection string has no AccountKey"),
    ({**IDENTITY, "FEDFUNC_STORAGE__tableServiceUri": "orch.table"}, "FEDFUNC_STORAGE__tableServiceUri"),
    ({"FEDFUNC_STORAGE": KEYED, "FEDFUNC_API_KEYS": '{"k": "root"}'}, "FEDFUNC_API_KEYS"),
    ({"FEDFUNC_STORAGE": KEYED, "FEDFUNC_RETRAIN_SCHEDULE": "0 3 * * *"}, "FEDFUNC_RETRAIN_SCHEDULE"),
])
def test_bad_storage_and_misc_settings_are_named(env, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(env)


def test_keyed_clients_give_read_only_sas():
    s = load_settings({"FEDFUNC_STORAGE": KEYED})
    url = read_url_for(blob_service(s).get_blob_client("models", "r1/round-0000/global.safetensors"))
    assert url.startswith("http://127.0.0.1:10000/orch/models/r1/round-0000/global.safetensors?")
    assert "sp=r&" in url and "sig=" in url
    assert table_service(s).url.startswith("http://127.0.0.1:10002/orch")


def test_identity_clients_have_no_key_and_plain_urls():
    s = load_settings(IDENTITY)
    blob = blob_service(s).get_blob_client("models", "m.safetensors")
    assert read_url_for(blob) == "https://orch.blob.core.windows.net/models/m.safetensors"
    assert not hasattr(blob.credential, "account_key")
