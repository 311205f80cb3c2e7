"""Typed app settings, validated once at start so a bad deployment fails at import, naming the setting.

``function_app.py`` calls ``load_settings(os.environ)``; every other module takes the ``Settings`` object.
One setting, ``FEDFUNC_JOB_BACKEND``, moves silo jobs between local processes and Azure ML; the
orchestration code never reads settings.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedfunc.validation import describe

DATASTORE = r"^[A-Za-z0-9_]{1,255}$"  # AML datastore names: letters, digits, underscores
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
APP_ROOT = Path(__file__).resolve().parents[1]  # the folder holding function_app.py and this package
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
STORAGE = "FEDFUNC_STORAGE"


class SettingsError(ValueError):
    """A missing or invalid app setting; the message starts with the setting's name."""


class StorageConnection(BaseModel):
    """Either a connection string (Azurite, local) or identity-based service URIs (Azure, no keys)."""

    model_config = ConfigDict(frozen=True)
    connection_string: str | None = None
    blob_service_uri: str | None = None
    table_service_uri: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


class AmlSettings(BaseModel):
    """Where silo jobs run on Azure and what onboarding needs to wire a new silo to the orchestrator."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    subscription_id: str = Field(alias="FEDFUNC_AML_SUBSCRIPTION_ID", pattern=GUID)
    resource_group: str = Field(alias="FEDFUNC_AML_RESOURCE_GROUP", pattern=r"^[-A-Za-z0-9_._()]{1,90}$")
    workspace: str = Field(alias="FEDFUNC_AML_WORKSPACE", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
    # Pinned "name:version"; a floating "@latest" would let the silo run code nobody reviewed.
    environment: str = Field(alias="FEDFUNC_AML_ENVIRONMENT")
    # The folder (in the published app) whose contents silo jobs put on PYTHONPATH: the app uploads it,
    # content-addressed, to its own ``code`` container, which silo identities may read (docs/azure.md).
    code: str = Field(alias="FEDFUNC_AML_CODE")
    location: str = Field(alias="FEDFUNC_AML_LOCATION", pattern=r"^[a-z0-9]+$")
    orchestrator_principal_id: str = Field(alias="FEDFUNC_AML_ORCHESTRATOR_PRINCIPAL_ID", pattern=GUID)
    orchestrator_storage_id: str = Field(
        alias="FEDFUNC_AML_ORCHESTRATOR_STORAGE_ID",
        pattern=r"(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$")
    function_app_id: str = Field(
        alias="FEDFUNC_AML_FUNCTION_APP_ID",
        pattern=r"(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Web/sites/[^/]+$")
    models_datastore: str = Field("fedfunc_models", alias="FEDFUNC_AML_MODELS_DATASTORE", pattern=DATASTORE)
    code_datastore: str = Field("fedfunc_code", alias="FEDFUNC_AML_CODE_DATASTORE", pattern=DATASTORE)
    silo_vm_size: str = Field("Standard_DS3_v2", alias="FEDFUNC_AML_SILO_VM_SIZE")
    # per-round: one AML job per silo per round (the default); per-run: one long-lived job per silo per run
    # that takes each round's request from its inbox (fedfunc.backends.aml_run_job), not yet verified on Azure.
    silo_jobs: Literal["per-round", "per-run"] = Field("per-round", alias="FEDFUNC_AML_SILO_JOBS")

    @field_validator("environment")
    @classmethod
    def _pinned(cls, v: str) -> str:
        if not re.fullmatch(r"(azureml:)?[A-Za-z0-9][A-Za-z0-9_.-]*:[A-Za-z0-9_.-]+", v) or v.endswith(":latest"):
            raise ValueError("must pin a version (name:version), not latest")
        return v

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if v.startswith("azureml:"):
            raise ValueError("registered code assets live in workspace storage, which silo identities cannot "
                             "read; give the folder the app uploads to its own code container (docs/azure.md)")
        path = Path(v) if Path(v).is_absolute() else APP_ROOT / v  # not the worker's working directory
        if not path.is_dir():
            raise ValueError(f"folder {v!r} does not exist in the app ({APP_ROOT})")
        return str(path)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    storage: StorageConnection
    job_backend: Literal["local", "aml"] = Field("local", alias="FEDFUNC_JOB_BACKEND")
    local_home: Path = Field(Path(".fedfunc"), alias="FEDFUNC_LOCAL_HOME")
    api_keys: dict[str, Literal["admin", "scientist"]] = Field(default_factory=dict, alias="FEDFUNC_API_KEYS")
    retrain_schedule: str | None = Field(None, alias="FEDFUNC_RETRAIN_SCHEDULE")
    # The run spec scheduled and data-triggered retraining starts (JSON); retraining is off without it.
    retrain_spec: dict | None = Field(None, alias="FEDFUNC_RETRAIN_SPEC")
    # A burst of data uploads ends (and its one retraining run starts) after this many quiet seconds.
    retrain_quiet_s: float = Field(30, gt=0, le=86400, alias="FEDFUNC_RETRAIN_QUIET_S")
    # The largest task bundle a scientist may upload (POST /api/bundles answers 400 above it).
    max_bundle_mb: float = Field(32, gt=0, le=1024, alias="FEDFUNC_MAX_BUNDLE_MB")
    # Ed25519 private key (PEM text or a file path) that signs job tickets; on Azure a Key Vault reference.
    orchestrator_key: str | None = Field(None, alias="FEDFUNC_ORCHESTRATOR_KEY")
    # Local backend only: Azurite's folder (its accounts.json), from which onboarding claims silo accounts.
    azurite_home: Path | None = Field(None, alias="FEDFUNC_AZURITE_HOME")
    # MLflow tracking (fedfunc.observe): a tracking URI (sqlite:///…, http(s)://…, azureml://…) or "off";
    # unset: the AML workspace's own with FEDFUNC_JOB_BACKEND=aml, else off.
    mlflow_tracking_uri: str | None = Field(None, alias="FEDFUNC_MLFLOW_TRACKING_URI")
    mlflow_experiment: str = Field("fedfunc", alias="FEDFUNC_MLFLOW_EXPERIMENT", min_length=1, max_length=200)
    # Domain events: the Event Grid custom topic's endpoint (a path: a topic of the local fedfunc host the app
    # runs on, at FEDFUNC_HOST_URL); its key only locally (on Azure the app's identity).
    events_endpoint: str | None = Field(None, alias="FEDFUNC_EVENTS_ENDPOINT", pattern=r"^(https?://[^/]+)?/")
    events_key: str | None = Field(None, alias="FEDFUNC_EVENTS_KEY")
    events_source: str = Field("/fedfunc", alias="FEDFUNC_EVENTS_SOURCE", min_length=1)
    # HMAC key of the run page's signed, expiring links (fedfunc run open); no links without it.
    link_key: str | None = Field(None, alias="FEDFUNC_LINK_KEY", min_length=32)
    host_url: str | None = Field(None, alias="FEDFUNC_HOST_URL")   # set by `fedfunc host` for the app it runs
    # Local backend only: silo jobs running at once in the warm worker pool (default: the number of cores).
    local_workers: int | None = Field(None, ge=1, le=256, alias="FEDFUNC_LOCAL_WORKERS")
    aml: AmlSettings | None = None

    @field_validator("api_keys", "retrain_spec", mode="before")
    @classmethod
    def _json(cls, v):
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("retrain_schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 6:
            raise ValueError("must be a six-field NCRONTAB expression (second minute hour day month weekday)")
        return v

    @field_validator("orchestrator_key")
    @classmethod
    def _resolved(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(KEY_VAULT_REFERENCE):
            raise ValueError("the Key Vault reference did not resolve: set the secret and give the app's identity "
                             "Key Vault Secrets User on the vault (docs/azure.md)")
        return v

    @model_validator(mode="after")
    def _aml_when_selected(self):
        if self.job_backend == "aml" and self.aml is None:
            raise ValueError("FEDFUNC_JOB_BACKEND=aml needs the FEDFUNC_AML_* settings")
        return self

    @property
    def events_url(self) -> str | None:
        """The topic's endpoint URL (a path resolved on the local host)."""
        if self.events_endpoint and self.events_endpoint.startswith("/"):
            if not self.host_url:
                raise SettingsError("FEDFUNC_EVENTS_ENDPOINT: a path names a topic of the local fedfunc host, "
                                    "but FEDFUNC_HOST_URL is not set (the app is not running on fedfunc host)")
            return self.host_url.rstrip("/") + self.events_endpoint
        return self.events_endpoint

    @property
    def tracking_uri(self) -> str | None:
        """Where MLflow tracking goes: the setting, else the AML workspace's URI with the AML backend."""
        if self.mlflow_tracking_uri:
            return None if self.mlflow_tracking_uri.lower() == "off" else self.mlflow_tracking_uri
        if self.aml is not None:
            from fedfunc.observe.tracking import aml_tracking_uri
            return aml_tracking_uri(location=self.aml.location, subscription_id=self.aml.subscription_id,
                                    resource_group=self.aml.resource_group, workspace=self.aml.workspace)
        return None


def _storage(env: Mapping[str, str]) -> StorageConnection:
    conn = env.get(STORAGE)
    blob, table = env.get(f"{STORAGE}__blobServiceUri"), env.get(f"{STORAGE}__tableServiceUri")
    if conn and (blob or table):
        raise SettingsError(f"{STORAGE}: set either the connection string or the __*ServiceUri settings, not both")
    if conn:
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        if not ("AccountKey" in parts or parts.get("UseDevelopmentStorage") == "true"):
            raise SettingsError(f"{STORAGE}: connection string has no AccountKey (for Azure use {STORAGE}__blobServiceUri)")
        return StorageConnection(connection_string=conn)
    for name, value in ((f"{STORAGE}__blobServiceUri", blob), (f"{STORAGE}__tableServiceUri", table)):
        if not value:
            raise SettingsError(f"{name}: missing ({STORAGE} is not set, so identity-based storage needs both URIs)")
        if not value.startswith(("https://", "http://")):
            raise SettingsError(f"{name}: {value!r} is not an http(s) URL")
    return StorageConnection(blob_service_uri=blob.rstrip("/"), table_service_uri=table.rstrip("/"))


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate the environment; raise ``SettingsError`` naming each bad setting. Empty values count as unset."""
    env = {k: v for k, v in env.items() if k.startswith("FEDFUNC_") and v.strip()}
    storage = _storage(env)
    try:
        aml = AmlSettings.model_validate(env) if env.get("FEDFUNC_JOB_BACKEND") == "aml" else None
        return Settings.model_validate({**env, "storage": storage, "aml": aml})
    except ValidationError as e:
        raise SettingsError(describe(e)) from None
