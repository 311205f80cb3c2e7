"""The silo job: the one pipeline every silo job runs, locally and on AML.

read data → fetch the global model (sha256 pinned) → train → package the update and metrics →
publish to the outbox (metrics first, then the update, whose BlobCreated event tells the orchestrator).
Any failure publishes ``failed.json`` instead. The job never calls the orchestrator.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math

import numpy as np

from fedfunc import layout
from fedfunc.backends import SiloJobRequest
from fedfunc.silo.io import Outbox, OutboxConflict, SiloIO
from fedfunc.weights import decode, encode, load_arrays_into, model_to_arrays, sha256

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """A silo job could not produce an update; ``rule`` names the check that stopped it, if any."""

    def __init__(self, reason: str, rule: str | None = None):
        super().__init__(reason)
        self.reason, self.rule = reason, rule


def read_training_data(io: SiloIO, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The silo's partition: ``x`` float32 (n, ...) and ``y`` int64 (n,)."""
    arrays, _ = decode(io.read_data(task))
    x, y = arrays.get("x"), arrays.get("y")
    where = f"data/{layout.silo_data(task)}"
    if x is None or y is None:
        raise JobFailed(f"{where} must hold arrays 'x' and 'y', has {sorted(arrays)}", "data.schema")
    if x.dtype != np.float32 or y.dtype != np.int64 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise JobFailed(f"{where}: need x float32 (n, ...) and y int64 (n,), n ≥ 1; got x {x.dtype}{x.shape}, "
                        f"y {y.dtype}{y.shape}", "data.schema")
    return x, y


def fetch_global_model(io: SiloIO, request: SiloJobRequest) -> tuple[bytes, dict[str, np.ndarray]]:
    """The global model's bytes and arrays, refused unless its sha256 is the one the round pinned."""
    data = io.read_model(request)
    digest = sha256(data)
    if digest != request.model_sha256:
        raise JobFailed(f"global model {request.model_url.split('?')[0]} has sha256 {digest}, "
                        f"the round pinned {request.model_sha256}", "model.sha256")
    arrays, _ = decode(data)
    return data, arrays


def _train_seed(request: SiloJobRequest) -> int:
    """Different shuffles per round and silo, identical for a re-run of the same job."""
    key = f"{request.hyperparams.seed}:{request.run_id}:{request.round}:{request.silo}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


def train(request: SiloJobRequest, global_arrays: dict[str, np.ndarray], x: np.ndarray,
          y: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float | int]]:
    """Local training from the global weights; deterministic (one thread, derived seed)."""
    import torch

    from fedfunc.tasks.registry import get_task

    torch.set_num_threads(1)
    task = get_task(request.task)
    hp = request.hyperparams
    model = task.build_model(seed=hp.seed)
    load_arrays_into(model, global_arrays)
    stats = task.train(model, x, y, epochs=hp.epochs, lr=hp.lr, batch_size=hp.batch_size, seed=_train_seed(request))
    if not math.isfinite(stats["loss"]):
        raise JobFailed(f"training diverged: loss {stats['loss']}", "train.non_finite")
    return model_to_arrays(model), {"loss": float(stats["loss"]), "num_samples": int(stats["num_samples"]),
                                    "epochs": hp.epochs}


def package(request: SiloJobRequest, arrays: dict[str, np.ndarray],
            metrics: dict[str, float | int]) -> dict[str, bytes]:
    """The artifacts to publish, byte-for-byte reproducible: canonical JSON, fixed metadata."""
    meta = {"run": request.run_id, "round": str(request.round), "silo": request.silo, "nonce": request.nonce,
            "num_samples": str(metrics["num_samples"])}
    return {layout.METRICS: json.dumps(metrics, sort_keys=True).encode(), layout.UPDATE: encode(arrays, meta)}


def publish(outbox: Outbox, prefix: str, artifacts: dict[str, bytes]) -> None:
    """Metrics first, the update last: the update's BlobCreated event means the job is complete."""
    for name in (layout.METRICS, layout.UPDATE):
        outbox.create(prefix + name, artifacts[name])


def report_failure(outbox: Outbox, prefix: str, reason: str, rule: str | None) -> None:
    """Publish ``failed.json`` unless the job already published its update or an earlier failure."""
    if outbox.read(prefix + layout.UPDATE) is not None:
        return
    body = json.dumps({"reason": reason, "rule": rule}, sort_keys=True).encode()
    try:
        outbox.create(prefix + layout.FAILED, body)
    except OutboxConflict:
        log.info("an earlier failed.json stays at %s", prefix)


def run_job(request: SiloJobRequest, io: SiloIO) -> dict[str, bytes]:
    """Run the pipeline; on failure publish ``failed.json`` and raise ``JobFailed``."""
    prefix = layout.outbox_prefix(request.run_id, request.round, request.silo)
    try:
        if request.outbox_prefix != prefix:
            raise JobFailed(f"outbox_prefix {request.outbox_prefix!r} is not this job's {prefix!r}", "request.outbox")
        x, y = read_training_data(io, request.task)
        _, global_arrays = fetch_global_model(io, request)
        arrays, metrics = train(request, global_arrays, x, y)
        artifacts = package(request, arrays, metrics)
        publish(io.outbox, prefix, artifacts)
        return artifacts
    except Exception as e:
        failure = e if isinstance(e, JobFailed) else JobFailed(f"{type(e).__name__}: {e}")
        report_failure(io.outbox, prefix, failure.reason, failure.rule)
        raise failure from e
