"""Silo jobs end to end: a local process evaluates, trains and publishes; an evaluate-only job publishes
its evaluation alone; failures and crashes publish failed.json."""
import json
import os
import signal
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from fedfunc import layout
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.evaluation import check_evaluation
from fedfunc.host.testing import wait_until
from fedfunc.weights import ModelManifest, decode, validate_update


def _read(service, path: str) -> bytes:
    return service.get_blob_client(layout.OUTBOX, path).download_blob().readall()


def test_job_trains_and_publishes_metrics_and_a_valid_update(silo_with_data, own_service, job_factory, silos, wait_outbox):
    silo_with_data("job-a")
    request = job_factory("job-a", "run-ok")
    LocalProcessBackend(silos.home_root).submit(request)
    service = own_service("job-a")
    assert wait_outbox(service, request.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.UPDATE
    update = _read(service, request.outbox_prefix + layout.UPDATE)
    metrics = json.loads(_read(service, request.outbox_prefix + layout.METRICS))
    global_arrays, _ = decode(BlobServiceClient.from_connection_string(job_factory.orch_conn)
                              .get_blob_client(layout.MODELS, layout.global_model("run-ok", 0)).download_blob().readall())
    expected = {"run": "run-ok", "round": 0, "silo": "job-a", "nonce": "n0nce"}
    checked = validate_update(update, ModelManifest.from_arrays(global_arrays), expected=expected)
    assert checked.num_samples == metrics["num_samples"] == 96
    assert any((checked.arrays[k] != global_arrays[k]).any() for k in global_arrays), "training changed nothing"
    figures = check_evaluation(_read(service, request.outbox_prefix + layout.EVALUATION), num_classes=10,
                               expected=expected)
    assert figures.num_examples == 24 and figures.accuracy < 0.5  # the untrained initial model, on the test part


def test_evaluate_only_job_publishes_its_evaluation_alone(silo_with_data, own_service, job_factory, silos,
                                                         wait_outbox):
    silo_with_data("job-e")
    request = job_factory("job-e", "run-eval", mode="evaluate")
    LocalProcessBackend(silos.home_root).submit(request)
    service = own_service("job-e")
    assert wait_outbox(service, request.outbox_prefix, (layout.EVALUATION, layout.FAILED)) == layout.EVALUATION
    names = [b.name.rsplit("/", 1)[1] for b in service.get_container_client(layout.OUTBOX)
             .list_blobs(name_starts_with=request.outbox_prefix)]
    assert names == [layout.EVALUATION]


def test_submit_is_idempotent_per_job_key(silo_with_data, own_service, job_factory, silos, wait_outbox,
                                          wait_job_ended):
    silo_with_data("job-b")
    backend = LocalProcessBackend(silos.home_root)
    request = job_factory("job-b", "run-idem")
    first = backend.submit(request)
    pid = backend.pid(first)
    assert backend.submit(request) == first and backend.pid(first) == pid
    wait_outbox(own_service("job-b"), request.outbox_prefix, (layout.UPDATE,))
    assert backend.submit(request) == first and backend.pid(first) == pid
    wait_job_ended(pid)  # the blob lands before the job logs that it published it
    log = (silos.home_root / "jobs" / f"{first}.log").read_text()
    assert log.count("update published") == 1


def test_wrong_model_bytes_fail_with_the_rule(silo_with_data, own_service, job_factory, silos, wait_outbox):
    """The global model was replaced after the ticket bound its sha256: the job says so in its slot."""
    silo_with_data("job-c")
    request = job_factory("job-c", "run-badhash")
    BlobServiceClient.from_connection_string(job_factory.orch_conn).get_blob_client(
        layout.MODELS, layout.global_model("run-badhash", 0)).upload_blob(b"swapped", overwrite=True)
    LocalProcessBackend(silos.home_root).submit(request)
    service = own_service("job-c")
    assert wait_outbox(service, request.outbox_prefix, (layout.UPDATE, layout.FAILED)) == layout.FAILED
    failed = json.loads(_read(service, request.outbox_prefix + layout.FAILED))
    assert failed["rule"] == "ticket.model_bytes" and request.model_sha256 in failed["reason"]
    assert not service.get_blob_client(layout.OUTBOX, request.outbox_prefix + layout.METRICS).exists()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_hard_crash_of_the_job_still_publishes_failed_json(silo_with_data, own_service, job_factory, silos,
                                                             hanging_server, wait_outbox):
    silo_with_data("job-d")
    request = job_factory("job-d", "run-crash",
                          model_url=f"{hanging_server.url}/fedorch/models/run-crash/round-0000/global.safetensors?sig=x")
    backend = LocalProcessBackend(silos.home_root)
    job = backend.submit(request)
    [worker] = wait_until(lambda: _children(backend.pid(job)), 30, interval=0.1, what="the supervisor's worker")
    wait_until(lambda: hanging_server.accepted, 60, interval=0.1, what="the worker blocked on the model download")
    os.kill(worker, signal.SIGKILL)  # what the OOM killer does
    service = own_service("job-d")
    assert wait_outbox(service, request.outbox_prefix, (layout.UPDATE, layout.FAILED), 30) == layout.FAILED
    failed = json.loads(_read(service, request.outbox_prefix + layout.FAILED))
    assert "SIGKILL" in failed["reason"]


def test_job_environment_holds_only_its_own_silo_home(tmp_path, monkeypatch):
    """No orchestrator setting, cloud credential or other silo's home reaches a job process."""
    for name in ("FEDFUNC_STORAGE", "FEDFUNC_ORCHESTRATOR_KEY", "FEDFUNC_API_KEYS", "AZURE_CLIENT_SECRET",
                 "AzureWebJobsStorage"):
        monkeypatch.setenv(name, "secret-value")
    env = LocalProcessBackend(tmp_path)._environment("alpha")
    assert not any("secret-value" in v for v in env.values())
    assert env["FEDFUNC_SILO_HOME"] == str((tmp_path / "silos" / "alpha").resolve())
    assert set(env) <= {"PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ", "HOME", "FEDFUNC_SILO_HOME"}
