"""MLflow tracking: what each fact of a run logs, as plain data (``mlflow_tracker`` does the logging).

One MLflow run per fedfunc run, tagged ``fedfunc.run`` and named after it, so every replay or retry logs
into the same one. A fact is one unit of work with a fixed timestamp (the orchestration's clock) and, for
a round, the round as the step: logging it again writes the very same values, which MLflow's SQL store
drops as duplicates, and a marker tag written last lets any store skip work already done.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedfunc import layout
from fedfunc.protocol import RoundResult, RunFact
from fedfunc.spec import RunSpec

RUN_TAG = "fedfunc.run"
MAX_TAG_TEXT = 500
Status = Literal["FINISHED", "FAILED", "KILLED"]
END_STATUS: dict[str, Status] = {"RunCompleted": "FINISHED", "RunFailed": "FAILED", "RunCancelled": "KILLED"}


class BlobArtifact(BaseModel):
    """An artifact copied from the orchestrator's storage; ``sha256`` pins a model's bytes."""

    model_config = ConfigDict(frozen=True)
    container: str
    path: str
    sha256: str | None = None


class TrackingWork(BaseModel):
    """What one fact logs to its run's MLflow run."""

    model_config = ConfigDict(frozen=True)
    id: str                                   # the outbox key: run:{run}:track:{what}[:{round}]
    run: str
    what: Literal["start", "round", "end"]
    timestamp_ms: int
    step: int | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    documents: dict[str, dict] = Field(default_factory=dict)        # JSON artifacts by artifact path
    blobs: dict[str, BlobArtifact] = Field(default_factory=dict)    # artifact path → blob
    status: Status | None = None              # end the MLflow run with this status

    @property
    def marker(self) -> str:
        """The tag that says this work is logged (written last)."""
        return f"fedfunc.logged.{self.what}" + ("" if self.step is None else f".{self.step:04d}")


def aml_tracking_uri(*, location: str, subscription_id: str, resource_group: str, workspace: str) -> str:
    """An Azure ML workspace's MLflow tracking URI (needs the ``azureml-mlflow`` plugin), as Azure ML
    documents building it. A workspace behind a private link has another one: set it explicitly."""
    return (f"azureml://{location}.api.azureml.ms/mlflow/v1.0/subscriptions/{subscription_id}"
            f"/resourceGroups/{resource_group}/providers/Microsoft.MachineLearningServices/workspaces/{workspace}")


def _short(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= MAX_TAG_TEXT else text[:MAX_TAG_TEXT - 1] + "…"


def spec_params(spec: RunSpec) -> dict[str, str]:
    """The run spec as MLflow params (the signed bundle by its hash; the strategy by name and options)."""
    plain = spec.model_dump(mode="json", exclude={"bundle", "hyperparams", "strategy"})
    params = {k: ",".join(v) if isinstance(v, list) else str(v) for k, v in plain.items()}
    for k, v in (spec.hyperparams or {}).items():
        params[f"hyperparams.{k}"] = str(v)
    if spec.bundle:
        params["bundle.code_hash"] = spec.bundle
    params["strategy"] = spec.strategy.name
    for k, v in spec.strategy.options.items():
        params[f"strategy.{k}"] = str(v)
    return params


def round_metrics(result: RoundResult) -> dict[str, float]:
    """Global metrics, silo counts, and per silo (``silo/{name}/...``) its own metrics, samples and time."""
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics["num_samples"] = float(result.num_samples)
    for state in ("received", "failed", "rejected"):
        metrics[f"silos_{state}"] = float(sum(o.state == state for o in result.silos.values()))
    for silo, o in sorted(result.silos.items()):
        metrics[f"silo/{silo}/accepted"] = 1.0 if o.state == "received" else 0.0
        for k, v in (o.metrics or {}).items():
            metrics[f"silo/{silo}/{k}"] = float(v)
        if o.num_samples is not None:
            metrics[f"silo/{silo}/num_samples"] = float(o.num_samples)
        if o.seconds is not None:
            metrics[f"silo/{silo}/seconds"] = float(o.seconds)
    return metrics


def _blob_ref(ref: str) -> BlobArtifact:
    container, _, path = ref.partition("/")
    return BlobArtifact(container=container, path=path)


def tracking_for(fact: RunFact) -> TrackingWork:
    """The MLflow work of a run's fact."""
    run, ts = fact.run_id, int(fact.at.timestamp() * 1000)
    if fact.kind == "RunStarted":
        spec = fact.spec
        return TrackingWork(id=f"run:{run}:track:start", run=run, what="start", timestamp_ms=ts,
                            params=spec_params(spec),
                            tags={RUN_TAG: run, "fedfunc.task": spec.task, "fedfunc.strategy": spec.strategy.name},
                            documents={"spec.json": spec.model_dump(mode="json")})
    if fact.kind == "RoundCompleted":
        r = fact.result
        outcomes = {s: o.model_dump(mode="json", exclude_none=True) for s, o in sorted(r.silos.items())}
        return TrackingWork(
            id=f"run:{run}:track:round:{r.round}", run=run, what="round", timestamp_ms=ts, step=r.round,
            metrics=round_metrics(r),
            tags={f"silo.{s}.state": o.state + (f": {_short(o.reason)}" if o.reason else "")
                  for s, o in r.silos.items()},
            documents={f"rounds/round-{r.round:04d}.json": {
                "round": r.round, "metrics": r.metrics, "num_samples": r.num_samples, "model": r.model.wire(),
                "silos": outcomes}})
    blobs = {f"report/{ref.rpartition('/')[2]}": _blob_ref(ref) for ref in (fact.report or {}).values()}
    if fact.model is not None:
        blobs["model/global.safetensors"] = BlobArtifact(container=layout.MODELS, path=fact.model.path,
                                                         sha256=fact.model.sha256)
    tags = {"fedfunc.status": fact.kind.removeprefix("Run").lower()}
    if fact.error:
        tags["fedfunc.error"] = _short(fact.error)
    if fact.stop_reason:
        tags["fedfunc.stop_reason"] = _short(fact.stop_reason)
    metrics = {"rounds_completed": float(fact.rounds_completed)} if fact.rounds_completed is not None else {}
    return TrackingWork(id=f"run:{run}:track:end", run=run, what="end", timestamp_ms=ts, metrics=metrics,
                        tags=tags, blobs=blobs, status=END_STATUS[fact.kind])
