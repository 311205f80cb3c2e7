"""Logging ``TrackingWork`` to MLflow: a local SQLite store (``fedfunc demo``), any MLflow server, or an
Azure ML workspace (``azureml://`` with the ``azureml-mlflow`` plugin, the app's managed identity).

The MLflow run of a fedfunc run is found, in order, from the record ``runs/{run}/mlflow-{uri hash}.json``,
by its tag ``fedfunc.run``, or created; the record is written create-once, so two drains racing to
create it settle on one run (the loser deletes its own). Work whose marker tag is on the run is skipped.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from fedfunc import layout, weights
from fedfunc.coordinator.store import RunStore, to_json
from fedfunc.observe.sinks import Refused
from fedfunc.observe.tracking import RUN_TAG, TrackingWork

BATCH = 100   # MLflow's log_batch takes at most 1000 metrics, 100 params and 100 tags per call


def _mlflow_http_defaults() -> None:
    """A tracking server that does not answer must not hold an activity for minutes: MLflow's own HTTP
    retries (7, with back-off) give way to the outbox's; explicit MLFLOW_HTTP_* settings still win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store sit beside the database (``…/mlflow.db`` → ``…/artifacts``);
    servers and Azure ML choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, store: RunStore):
        _mlflow_http_defaults()
        self.uri, self.experiment, self.store = uri, experiment, store
        self._client_obj = None
        self._experiment_id: str | None = None

    @property
    def target(self) -> str:
        """The store, for logs: a server's URI without a password or query (which may hold a token)."""
        parsed = urlparse(self.uri)
        if parsed.scheme in ("sqlite", "file"):
            return self.uri
        return f"{parsed.scheme}://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"

    def _client(self):
        if self._client_obj is None:
            from mlflow.tracking import MlflowClient
            self._client_obj = MlflowClient(tracking_uri=self.uri)
        return self._client_obj

    def _experiment(self, client) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = client.create_experiment(
                        self.experiment, artifact_location=artifact_location(self.uri))
                except MlflowException:   # created a moment ago by another drain
                    found = client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            self._experiment_id = self._experiment_id or found.experiment_id
        return self._experiment_id

    def _record_path(self, run: str) -> str:
        return f"{run}/mlflow-{hashlib.sha256(self.uri.encode()).hexdigest()[:12]}.json"

    def mlflow_run_id(self, run: str, start_ms: int | None = None) -> str | None:
        """The MLflow run of ``run``: recorded, found by tag, or (with ``start_ms``) created."""
        client = self._client()
        record = self.store.get_json(layout.RUNS, self._record_path(run))
        if record:
            return record["run_id"]
        experiment = self._experiment(client)
        found = client.search_runs([experiment], filter_string=f"tags.`{RUN_TAG}` = '{run}'",
                                   order_by=["attributes.start_time ASC"], max_results=1)
        if found:
            return self._settle(run, found[0].info.run_id, created=False)
        if start_ms is None:
            return None
        created = client.create_run(experiment, start_time=start_ms, run_name=run, tags={RUN_TAG: run})
        return self._settle(run, created.info.run_id, created=True)

    def _settle(self, run: str, run_id: str, *, created: bool) -> str:
        """Record ``run_id`` as ``run``'s MLflow run unless another drain recorded one first; then a run
        this drain created is deleted and the recorded one is used."""
        path = self._record_path(run)
        record = {"tracking_uri": self.target, "run_id": run_id, "experiment_id": self._experiment_id}
        if self.store.create_once(layout.RUNS, path, to_json(record)):
            return run_id
        winner = self.store.get_json(layout.RUNS, path)["run_id"]
        if created and winner != run_id:
            self._client().delete_run(run_id)
        return winner

    def apply(self, work: TrackingWork) -> None:
        """Log ``work`` (skipped if its marker is on the run); ``Refused`` if MLflow rejects it as invalid."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            run_id = self.mlflow_run_id(work.run, work.timestamp_ms)
            if client.get_run(run_id).data.tags.get(work.marker):
                return
            metrics = [Metric(k, v, work.timestamp_ms, work.step or 0) for k, v in sorted(work.metrics.items())]
            params = [Param(k, v) for k, v in sorted(work.params.items())]
            tags = [RunTag(k, v) for k, v in sorted(work.tags.items())]
            for i in range(0, max(len(metrics), len(params), len(tags)), BATCH):
                client.log_batch(run_id, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH],
                                 tags=tags[i:i + BATCH])
            for path, document in work.documents.items():
                client.log_dict(run_id, document, path)
            self._copy_blobs(client, run_id, work)
            if work.status:
                client.set_terminated(run_id, work.status, end_time=work.timestamp_ms)
            client.set_tag(run_id, work.marker, "1")
        except MlflowException as e:
            if e.get_http_status_code() == 400:
                raise Refused(f"MLflow refused {work.id}: {e.message}") from None
            raise

    def _copy_blobs(self, client, run_id: str, work: TrackingWork) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for artifact_path, blob in sorted(work.blobs.items()):
                data = self.store.get_bytes(blob.container, blob.path)
                if data is None:
                    raise Refused(f"{blob.container}/{blob.path} is missing from the orchestrator's storage")
                if blob.sha256 and weights.sha256(data) != blob.sha256:
                    raise Refused(f"{blob.container}/{blob.path} does not match its recorded sha256")
                folder, _, name = artifact_path.rpartition("/")
                local = Path(tmp) / name
                local.write_bytes(data)
                client.log_artifact(run_id, str(local), artifact_path=folder or None)
