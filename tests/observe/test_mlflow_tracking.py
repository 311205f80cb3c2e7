"""MLflow tracking against a real SQLite store, read back through the MLflow client: params, per-round and
per-silo metrics with the round as the step, outcomes, artifacts; logging a fact twice logs it once."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from observe_facts import SHA

from fedfunc import layout, weights
from fedfunc.observe.mlflow_tracker import MlflowTracker
from fedfunc.observe.sinks import Refused
from fedfunc.observe.tracking import RUN_TAG, aml_tracking_uri, tracking_for
from fedfunc.settings import load_settings


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def put_run_blobs(store, run: str) -> str:
    """The report files and the final model a finished run leaves in storage; returns the model's sha256."""
    store.put_bytes(layout.RUNS, layout.report(run, "json"), b'{"status": "completed"}')
    store.put_bytes(layout.RUNS, layout.report(run, "png"), b"\x89PNG fake")
    data = weights.encode({"w": __import__("numpy").ones(3, "float32")}, {"run": run, "round": "2"})
    store.put_bytes(layout.MODELS, layout.global_model(run, 2), data)
    return weights.sha256(data)


def with_model_sha(fact, sha: str):
    return fact.model_copy(update={"model": fact.model.model_copy(update={"sha256": sha})})


def test_a_run_in_mlflow_logged_twice_is_logged_once(uri, store, run_facts, request):
    run = request.node.name[-40:].replace("_", "-")
    sha = put_run_blobs(store, run)
    facts = run_facts(run)
    facts[-1] = with_model_sha(facts[-1], sha)
    tracker = MlflowTracker(uri, "fedfunc-test", store)
    for _ in range(2):   # a retried activity, a replay, a second drain
        for fact in facts:
            tracker.apply(tracking_for(fact))

    client = MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("fedfunc-test").experiment_id],
                                  filter_string=f"tags.`{RUN_TAG}` = '{run}'")
    assert found.info.run_name == run and found.info.status == "FINISHED"
    assert found.data.params["task"] == "digits" and found.data.params["strategy"] == "fedavg"
    assert found.data.params["bundle.code_hash"] == "c" * 64 and found.data.tags["fedfunc.strategy"] == "fedavg"
    rid = found.info.run_id
    history = {k: [(m.step, m.value) for m in client.get_metric_history(rid, k)]
               for k in ("accuracy", "silo/site-1/loss", "silo/site-1/test_accuracy", "silo/site-2/accepted",
                         "silos_rejected")}
    assert history == {"accuracy": [(0, 0.9), (1, 0.91)], "silo/site-1/loss": [(0, 0.5), (1, 0.25)],
                       "silo/site-1/test_accuracy": [(0, 0.8), (1, 0.81)], "silo/site-2/accepted": [(0, 0.0), (1, 0.0)],
                       "silos_rejected": [(0, 0.0), (1, 1.0)]}
    assert found.data.tags["silo.site-3.state"].startswith("rejected: update.non_finite")
    artifacts = {a.path for folder in ("", "rounds", "report", "model") for a in client.list_artifacts(rid, folder)}
    assert {"spec.json", "rounds/round-0001.json", "report/report.json", "report/report.png",
            "model/global.safetensors"} <= artifacts
    outcome = json.loads(open(client.download_artifacts(rid, "rounds/round-0001.json")).read())
    assert outcome["silos"]["site-2"]["reason"].startswith("data/digits")
    model = open(client.download_artifacts(rid, "model/global.safetensors"), "rb").read()
    assert weights.sha256(model) == sha


def test_two_drains_racing_to_create_the_run_settle_on_one(uri, store, run_facts, request):
    run = request.node.name[-40:].replace("_", "-")
    a, b = MlflowTracker(uri, "fedfunc-race", store), MlflowTracker(uri, "fedfunc-race", store)
    a.apply(tracking_for(run_facts(run)[0]))     # a creates the run and records it
    first = a.mlflow_run_id(run)
    client = b._client()                         # b had searched before that, found none, and creates one too
    late = client.create_run(b._experiment(client), run_name=run, tags={RUN_TAG: run}).info.run_id
    assert first != late and b._settle(run, late, created=True) == first
    assert client.get_run(late).info.lifecycle_stage == "deleted"
    assert b.mlflow_run_id(run) == first
    fresh = MlflowTracker(uri, "fedfunc-race", store)   # a later process finds it through the record
    assert fresh.mlflow_run_id(run) == first


def test_a_model_that_does_not_match_its_hash_is_refused(uri, store, run_facts, request):
    run = request.node.name[-40:].replace("_", "-")
    put_run_blobs(store, run)
    tracker = MlflowTracker(uri, "fedfunc-test", store)
    with pytest.raises(Refused, match="sha256"):
        tracker.apply(tracking_for(with_model_sha(run_facts(run)[-1], SHA)))


def test_the_azure_ml_tracking_uri_is_built_from_the_workspace_settings(tmp_path):
    env = {"FEDFUNC_STORAGE__blobServiceUri": "https://acct.blob.core.windows.net",
           "FEDFUNC_STORAGE__tableServiceUri": "https://acct.table.core.windows.net",
           "FEDFUNC_JOB_BACKEND": "aml", "FEDFUNC_AML_SUBSCRIPTION_ID": "00000000-1111-2222-3333-444444444444",
           "FEDFUNC_AML_RESOURCE_GROUP": "rg-fl", "FEDFUNC_AML_WORKSPACE": "mlw-fl", "FEDFUNC_AML_LOCATION": "westeurope",
           "FEDFUNC_AML_ENVIRONMENT": "fl-env:3", "FEDFUNC_AML_CODE": str(tmp_path),
           "FEDFUNC_AML_ORCHESTRATOR_PRINCIPAL_ID": "00000000-1111-2222-3333-555555555555",
           "FEDFUNC_AML_ORCHESTRATOR_STORAGE_ID": "/subscriptions/s/resourceGroups/rg-fl/providers/"
                                                  "Microsoft.Storage/storageAccounts/acct",
           "FEDFUNC_AML_FUNCTION_APP_ID": "/subscriptions/s/resourceGroups/rg-fl/providers/Microsoft.Web/sites/fl"}
    expected = ("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/00000000-1111-2222-3333-444444444444"
                "/resourceGroups/rg-fl/providers/Microsoft.MachineLearningServices/workspaces/mlw-fl")
    assert load_settings(env).tracking_uri == expected
    assert expected == aml_tracking_uri(location="westeurope", subscription_id="00000000-1111-2222-3333-444444444444",
                                        resource_group="rg-fl", workspace="mlw-fl")
    private_link = "azureml://mlw-fl.privatelink.api.azureml.ms/mlflow/v1.0/x"
    assert load_settings({**env, "FEDFUNC_MLFLOW_TRACKING_URI": private_link}).tracking_uri == private_link
    assert load_settings({**env, "FEDFUNC_MLFLOW_TRACKING_URI": "off"}).tracking_uri is None
    local = {k: v for k, v in env.items() if not k.startswith(("FEDFUNC_AML", "FEDFUNC_JOB"))}
    assert load_settings(local).tracking_uri is None
