"""The Bicep and the app, tested together.

- The app settings ``main.bicep`` writes (evaluated from the parsed template, ``armsim``) pass
  ``load_settings`` and index every function of the deployment package (what ``func azure functionapp
  publish`` uploads, ``.funcignore`` applied), ``%SETTING%`` references and timer schedules included.
- Every Event Grid subscription that the Bicep or the Azure onboarding creates reaches a function of the
  app that accepts the events it lets through, with advanced filters only on documented field names; and
  every kind of event the app waits for (outbox updates, failure notes, data uploads, failed jobs) has
  such a subscription on both routes.
- App Service Authentication, when configured, leaves Event Grid's delivery path open.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import azure.functions as func
import pytest

import armsim
import bicepcheck as bc
from fedfunc import layout
from fedfunc.azure import naming, onboarding
from fedfunc.azure.package import build
from fedfunc.security import keys

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MAIN, SILO = bc.parse(REPO / "infra" / "main.bicep"), bc.parse(REPO / "infra" / "modules" / "silo.bicep")
EVENT_SUBSCRIPTION = "Microsoft.EventGrid/systemTopics/eventSubscriptions"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
# Field names of each event type's `data`, as Microsoft documents them: RunStatusChanged
# (MachineLearningServicesRunStatusChangedEventData: experimentId, experimentName, runId, runType, runTags,
# runProperties, runStatus) and BlobCreated (StorageBlobCreatedEventData). Advanced filter keys are matched
# against these exactly.
DOCUMENTED_DATA = {
    RUN_STATUS_CHANGED: {"experimentId", "experimentName", "runId", "runType", "runTags", "runProperties",
                         "runStatus"},
    BLOB_CREATED: {"api", "clientRequestId", "requestId", "eTag", "contentType", "contentLength",
                   "contentOffset", "blobType", "url", "sequencer", "storageDiagnostics"},
}
TOPIC_EVENTS = {"Microsoft.Storage.StorageAccounts": {BLOB_CREATED},
                "Microsoft.MachineLearningServices.Workspaces": {RUN_STATUS_CHANGED}}
SILO_PARAMS = {"siloName": "north-eu", "workspaceName": "fl-mlw", "storageAccountName": "flnortheu0001",
               "computeName": "fl-north-eu", "orchestratorPrincipalId": "00000000-0000-0000-0000-0000000000aa",
               "orchestratorStorageName": "florch", "functionAppId": "/subscriptions/s/resourceGroups/rg-fl/"
               "providers/Microsoft.Web/sites/fl-func"}
ACCOUNT = SILO_PARAMS["storageAccountName"]


# -- the deployment package, indexed with main.bicep's settings -------------------------------------------

def bicep_settings() -> dict[str, str]:
    settings = armsim.app_settings(MAIN, "functionApp")
    vault = armsim.Arm(MAIN).name("vault")
    # The platform resolves the Key Vault reference before the app starts; the resolved secret stands in.
    assert settings["FEDFUNC_ORCHESTRATOR_KEY"] == \
        f"@Microsoft.KeyVault(VaultName={vault};SecretName=orchestrator-ticket-key)"
    return {**settings, "FEDFUNC_ORCHESTRATOR_KEY": keys.private_pem(keys.generate()).decode()}


def index(app_dir: Path, settings: dict[str, str]) -> dict:
    """Index ``app_dir`` in a fresh process whose app settings are exactly ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FEDFUNC_", "AzureWebJobs", "AZURE_"))}
    proc = subprocess.run([sys.executable, str(HERE / "index_app.py"), str(app_dir)],
                          env={**base, **settings, "PYTHONPATH": str(app_dir)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish") / "app"
    build(REPO, out)
    return out


@pytest.fixture(scope="module")
def indexed(package) -> dict:
    return index(package, bicep_settings())


@pytest.fixture(scope="module")
def app_functions() -> dict[str, str]:
    """Every function the repo's app registers (name → trigger type), loaded in this process under a plain
    local configuration: what the app defines, whatever an Azure deployment's settings do to it."""
    from fedfunc.host.app_loader import load_app

    with pytest.MonkeyPatch.context() as env:
        for name in [k for k in os.environ if k.startswith("FEDFUNC_")]:
            env.delenv(name)
        env.setenv("FEDFUNC_STORAGE", "UseDevelopmentStorage=true")
        return {f.name: f.trigger_type for f in load_app(REPO).functions.values()}


def test_main_bicep_settings_pass_load_settings_and_index_every_function(indexed, package, app_functions):
    assert indexed["fedfunc"] == str(package / "fedfunc")  # the package's code, not the repo's
    assert "load_error" not in indexed, indexed.get("load_error")
    assert indexed["settings_error"] is None
    assert indexed["unresolved"] == {}
    assert {n: f["type"] for n, f in indexed["functions"].items()} == app_functions
    assert indexed["functions"]["scheduled_retraining"]["disabled"]  # off unless the admin turns it on


def test_a_bad_setting_still_indexes_every_function_and_names_itself(package, indexed):
    found = index(package, {**bicep_settings(), "FEDFUNC_AML_WORKSPACE": "x"})
    assert "load_error" not in found, found.get("load_error")
    assert found["settings_error"].startswith("FEDFUNC_AML_WORKSPACE")
    assert "FEDFUNC_AML_WORKSPACE" in found["log"]
    assert set(found["functions"]) == set(indexed["functions"])


# -- Event Grid subscriptions → functions -----------------------------------------------------------------

def _subscription(origin: str, topic: dict, body: dict) -> dict:
    props = body["properties"]
    destination, filt = props["destination"], props.get("filter", {})
    return {"origin": origin, "topic_type": topic["properties"]["topicType"],
            "endpoint": destination["endpointType"], "resource": destination["properties"]["resourceId"],
            "types": filt.get("includedEventTypes"), "begins": filt.get("subjectBeginsWith", ""),
            "ends": filt.get("subjectEndsWith", ""), "advanced": filt.get("advancedFilters", [])}


def bicep_subscriptions() -> list[dict]:
    found = []
    for f, params in ((MAIN, {"wireEvents": True}), (SILO, SILO_PARAMS)):
        arm = armsim.Arm(f, params)
        for symbol, r in f.resources.items():
            if r.type == EVENT_SUBSCRIPTION:
                topic = arm.instances(r.parent)[0]
                found += [_subscription(f"{Path(f.path).name}:{s['name']}", topic, s) for s in arm.instances(symbol)]
    return found


class RecordingGateway:
    def __init__(self):
        self.resources = {}

    def put_resource(self, resource_id, api_version, body):
        self.resources[resource_id] = body
        return body


def onboarding_subscriptions() -> list[dict]:
    from fedfunc.settings import AmlSettings

    app = SILO_PARAMS["functionAppId"]
    aml = AmlSettings.model_validate({
        "FEDFUNC_AML_SUBSCRIPTION_ID": armsim.SUBSCRIPTION, "FEDFUNC_AML_RESOURCE_GROUP": "rg-fl",
        "FEDFUNC_AML_WORKSPACE": "fl-mlw", "FEDFUNC_AML_ENVIRONMENT": "fedfunc-silo:1",
        "FEDFUNC_AML_CODE": str(REPO / "fedfunc"), "FEDFUNC_AML_LOCATION": "westeurope",
        "FEDFUNC_AML_ORCHESTRATOR_PRINCIPAL_ID": SILO_PARAMS["orchestratorPrincipalId"],
        "FEDFUNC_AML_ORCHESTRATOR_STORAGE_ID": f"{app.split('/providers/')[0]}/providers/Microsoft.Storage/"
                                               f"storageAccounts/{SILO_PARAMS['orchestratorStorageName']}",
        "FEDFUNC_AML_FUNCTION_APP_ID": app})
    gw = RecordingGateway()
    onboarding.ensure(gw, aml, "north-eu", "event_subscriptions")
    topics = {k: v for k, v in gw.resources.items() if "/eventSubscriptions/" not in k}
    return [_subscription(f"onboarding:{k.rsplit('/', 1)[1]}", topics[k.split("/eventSubscriptions/")[0]], v)
            for k, v in gw.resources.items() if "/eventSubscriptions/" in k]


def _event(event_type: str, subject: str, data: dict, topic: str) -> func.EventGridEvent:
    return func.EventGridEvent(id="e1", data=data, topic=topic, subject=subject, event_type=event_type,
                               event_time=datetime.now(timezone.utc), data_version="1")


STORAGE_TOPIC = f"/subscriptions/s/resourceGroups/rg-fl/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
WORKSPACE_TOPIC = "/subscriptions/s/resourceGroups/rg-fl/providers/Microsoft.MachineLearningServices/workspaces/w"
OUTBOX = "/blobServices/default/containers/outbox/blobs/"
BLOB_DATA = {"api": "PutBlob", "eTag": "0x8D", "contentLength": 10, "blobType": "BlockBlob",
             "url": f"https://{ACCOUNT}.blob.core.windows.net/x"}
# Every kind of event the app waits for, as Azure documents it, and the function that must receive it.
SAMPLES = {
    "update": ("on_update", _event(BLOB_CREATED, OUTBOX + layout.outbox_prefix("run-7", 3, "north-eu")
                                   + layout.UPDATE, BLOB_DATA, STORAGE_TOPIC)),
    "evaluation": ("on_update", _event(BLOB_CREATED, OUTBOX + layout.outbox_prefix("run-7", 3, "north-eu")
                                       + layout.EVALUATION, BLOB_DATA, STORAGE_TOPIC)),
    "failure note": ("on_update", _event(BLOB_CREATED, OUTBOX + layout.outbox_prefix("run-7", 3, "north-eu")
                                         + layout.FAILED, BLOB_DATA, STORAGE_TOPIC)),
    "data upload": ("on_data_uploaded", _event(BLOB_CREATED, "/blobServices/default/containers/data/blobs/"
                                               + layout.silo_data("digits", "train") + "scans/0001.png", BLOB_DATA,
                                               STORAGE_TOPIC)),
    "failed job": ("on_job_status", _event(RUN_STATUS_CHANGED, "experiments/e/runs/r", {
        "experimentId": "e", "experimentName": naming.experiment("run-7"), "runType": "azureml.command",
        "runId": naming.job_name("run-7", 3, "north-eu"), "runStatus": "Failed", "runProperties": {},
        "runTags": {"fedfunc.run": "run-7", "fedfunc.round": "3", "fedfunc.silo": "north-eu"}},
        WORKSPACE_TOPIC)),
}


def delivered(sub: dict, event: func.EventGridEvent) -> bool:
    """Event Grid's filter semantics: event types, subject prefix/suffix (case-insensitive by default),
    advanced filters on `data.<field>` (exact field name; StringIn compares values case-insensitively)."""
    subject = event.subject.lower()
    if sub["types"] and event.event_type not in sub["types"]:
        return False
    if not (subject.startswith(sub["begins"].lower()) and subject.endswith(sub["ends"].lower())):
        return False
    for f in sub["advanced"]:
        assert f["operatorType"] == "StringIn", f"{sub['origin']}: only StringIn is modelled here"
        value = (event.get_json() or {}).get(f["key"].removeprefix("data."))
        if value is None or str(value).lower() not in {v.lower() for v in f["values"]}:
            return False
    return True


@pytest.fixture
def accepts(monkeypatch):
    """``accepts(function, event)``: the app's own routing for that function takes the event (not ignored).
    The blob each event names is in the silo's outbox, with the event's eTag and size."""
    from fedfunc.azure.events import job_failure
    from fedfunc.coordinator.services import OutboxBlob
    from triggers import retraining, silo_events

    record = SimpleNamespace(name="north-eu", account=ACCOUNT)
    there = OutboxBlob(etag=BLOB_DATA["eTag"], size=BLOB_DATA["contentLength"])  # the blob each event names
    fake = SimpleNamespace(registry=SimpleNamespace(get=lambda silo: record, list=lambda: [record]),
                           store=SimpleNamespace(get_json=lambda container, path: None),  # no round manifest
                           outbox_blob=lambda record, path: there,
                           outbox_reader=lambda: lambda silo, path, n: b'{"reason": "out of memory"}',
                           audit=SimpleNamespace(record=lambda *a, **k: None))
    monkeypatch.setattr(silo_events, "services", lambda: fake)
    monkeypatch.setattr(retraining, "services", lambda: fake)
    routes = {"on_update": silo_events.route_outbox_event, "on_data_uploaded": retraining.upload_of,
              "on_job_status": lambda e: job_failure(e.event_type, e.get_json())}
    return lambda function, event: function in routes and routes[function](event) is not None


def _function_of(sub: dict) -> str:
    return sub["resource"].rsplit("/functions/", 1)[1]


@pytest.mark.parametrize("subs", [bicep_subscriptions, onboarding_subscriptions], ids=["bicep", "onboarding"])
def test_every_subscription_reaches_a_function_that_accepts_its_events(subs, app_functions, accepts):
    subs = subs()
    assert subs
    for sub in subs:
        where, function = sub["origin"], _function_of(sub)
        assert sub["endpoint"] == "AzureFunction", where
        assert app_functions.get(function) == "eventGridTrigger", \
            f"{where}: no Event Grid trigger function {function!r} in the app"
        assert set(sub["types"]) <= TOPIC_EVENTS[sub["topic_type"]], f"{where}: event types of another topic"
        for f in sub["advanced"]:
            field = f["key"].removeprefix("data.")
            assert any(field in DOCUMENTED_DATA[t] for t in sub["types"]), \
                f"{where}: advanced filter key {f['key']!r} is not a documented data field of {sub['types']}"
        passing = [kind for kind, (_, event) in SAMPLES.items() if delivered(sub, event)]
        assert passing, f"{where}: lets through none of the events the app waits for"
        for kind in passing:
            assert accepts(function, SAMPLES[kind][1]), f"{where}: {function} ignores the {kind} it is sent"


@pytest.mark.parametrize("subs,kinds", [
    (bicep_subscriptions, list(SAMPLES)),
    (onboarding_subscriptions, ["update", "failure note", "data upload"]),  # silo storage only
], ids=["bicep", "onboarding"])
def test_every_event_the_app_waits_for_has_a_subscription(subs, kinds):
    subs = subs()
    for kind in kinds:
        function, event = SAMPLES[kind]
        assert any(delivered(s, event) and _function_of(s) == function for s in subs), \
            f"no subscription delivers a {kind} to {function}"


def test_bicep_and_onboarding_create_the_same_silo_subscriptions():
    def key(s):
        return (s["topic_type"], _function_of(s), tuple(s["types"]), s["begins"], s["ends"])
    silo = [s for s in bicep_subscriptions() if s["origin"].startswith("silo.bicep")]
    assert sorted(map(key, silo)) == sorted(map(key, onboarding_subscriptions()))


# -- App Service Authentication ---------------------------------------------------------------------------

def test_app_service_authentication_lets_event_grid_deliver():
    """Event Grid delivers to /runtime/webhooks/eventgrid with the function system key, not an Entra ID
    token: that path must be excluded from required authentication, or deliveries get 401."""
    auth = [s for s, r in MAIN.resources.items()
            if r.type == "Microsoft.Web/sites/config" and r.name == "authsettingsV2"]
    assert auth, "main.bicep configures no App Service Authentication"
    body = armsim.Arm(MAIN, {"authClientId": "11111111-1111-1111-1111-111111111111"}).instances(auth[0])[0]
    validation = body["properties"]["globalValidation"]
    assert validation["requireAuthentication"] and validation["unauthenticatedClientAction"] == "Return401"
    assert "/runtime/webhooks/eventgrid" in validation["excludedPaths"]
