"""The silo job: the one pipeline every silo job runs, locally and on AML.

authenticate (the orchestrator's ticket, against the silo's own policy: silo, run, round, nonce, bundle and
the global model's URL and sha256) → admit (policy rules → the signed bundle: trusted signer, signature,
every file hash → requirements → the silo side: the silo's own update transforms, then the bundle's, must
chain; all before any task code is imported or data read) → load the task from the bundle's verified
bytes, in this process → fetch the global model (the ticket's sha256, names and shapes as the bundle's
initial weights; before any data is read) → evaluate it on the silo's test part → (train mode) train on
the training part, with the signed training hooks (FedProx's proximal term) → the update transforms (the
silo's own first, then the signed ones: delta, clip, …), each recorded in the update's metadata →
package → egress check → publish to the outbox (metrics and
evaluation first, the update last: its BlobCreated event tells the orchestrator; an evaluate-only job
ends with its evaluation). Any failure or refusal of an authenticated job publishes ``failed.json`` (with
the rule) instead and nothing else; an unauthenticated job is refused without writing into the round at
all. The silo's own audit trail records the start, the refusal or each artifact that left. The job never
calls the orchestrator.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone

import numpy as np

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.evaluation import EvalFigures
from fedfunc.pipeline import TransformError, Update, to_metadata
from fedfunc.pipeline.silo import SiloPipeline
from fedfunc.security import Refused
from fedfunc.security.audit import SiloAuditTrail
from fedfunc.security.bundle import MAX_BUNDLE_BYTES, VerifiedBundle, verify_bundle
from fedfunc.security.egress import check_egress
from fedfunc.security.policy import SiloPolicy, enforce, parse_policy, recent_usage
from fedfunc.security.requirements import check_requirements
from fedfunc.security.tickets import verify_ticket
from fedfunc.silo.io import Outbox, OutboxConflict, SiloIO
from fedfunc.weights import TIME_KEYS, ModelManifest, decode, encode, model_to_arrays, sha256

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """A silo job could not produce its artifacts; ``rule`` names the check that stopped it, if any."""

    def __init__(self, reason: str, rule: str | None = None):
        super().__init__(reason)
        self.reason, self.rule = reason, rule


def authenticate(request: SiloJobRequest, io: SiloIO, now: datetime | None = None) -> SiloPolicy:
    """The silo's policy, if the request carries a ticket from an orchestrator key that policy trusts,
    for exactly this silo, run, round, nonce, bundle and global model (URL and sha256); else ``Refused``.

    Only an authenticated job may speak for a round (publish ``failed.json`` in its slot): a forged
    job is refused without touching the round, so it cannot knock the silo out of it.
    """
    policy = parse_policy(io.read_policy())
    verify_ticket(request.ticket, policy.orchestrator_keys, silo=policy.silo, run=request.run_id,
                  round=request.round, code_hash=request.bundle or "", nonce=request.nonce,
                  model_url=request.model_url, model_sha256=request.model_sha256, now=now)
    return policy


def admit(request: SiloJobRequest, policy: SiloPolicy, io: SiloIO, trail: SiloAuditTrail | None = None,
          now: datetime | None = None) -> tuple[VerifiedBundle, SiloPipeline]:
    """The job's bundle and silo pipeline, if the silo's policy allows the job, a trusted signer signed the
    bundle, every byte of it matches what was signed, this environment meets its requirements and the
    silo's own update transforms chain with the signed ones; else ``Refused``.

    ``trail`` (the silo's audit trail) supplies the jobs already run today for the daily limit.
    """
    usage = recent_usage(trail.recent(now), request.job_key, now) if trail else 0
    enforce(policy, request, usage)
    if request.bundle is None:
        raise Refused("bundle.unsigned", "job", "the job names no signed task bundle")
    try:
        data = io.read_bundle(request.bundle, MAX_BUNDLE_BYTES)
    except (FileNotFoundError, ValueError) as e:
        raise Refused("bundle.unavailable", f"bundle {request.bundle[:16]}", str(e)) from None
    bundle = verify_bundle(data, policy.trusted_signers, expected_hash=request.bundle)
    if bundle.manifest.task != request.task:
        raise Refused("bundle.task", f"task {request.task!r}", f"the signed bundle is for task {bundle.manifest.task!r}")
    check_requirements(bundle.manifest.requirements)
    try:
        pipeline = SiloPipeline(bundle.config, own=policy.update_transforms)
    except TransformError as e:
        raise Refused("policy.update_transforms", f"bundle {bundle.code_hash[:16]} transforms",
                      f"this silo's own transforms, then the signed ones, cannot run: {e}") from None
    return bundle, pipeline


def load_task(bundle: VerifiedBundle):
    """The bundle's task (imported here, in the job process) and its initial weights."""
    from fedfunc.tasks.loader import TaskError, from_bundle

    try:
        return from_bundle(bundle)
    except TaskError as e:
        raise JobFailed(e.message, e.rule) from None


def fetch_global_model(io: SiloIO, request: SiloJobRequest, initial: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The global model's arrays, refused unless the downloaded bytes have the sha256 the ticket binds
    (``authenticate`` checked that the request's ``model_sha256`` is the ticket's) and its tensors are the
    bundle's (names, shapes, dtypes)."""
    data = io.read_model(request)
    digest = sha256(data)
    if digest != request.model_sha256:
        raise Refused("ticket.model_bytes", f"global model {request.model_url.split('?')[0]}",
                      f"downloaded bytes have sha256 {digest}, the ticket binds {request.model_sha256}")
    arrays = decode(data)[0]
    want, have = ModelManifest.from_arrays(initial), ModelManifest.from_arrays(arrays)
    if want != have:
        odd = sorted(n for n in set(want.tensors) | set(have.tensors) if want.tensors.get(n) != have.tensors.get(n))
        raise JobFailed(f"the global model's tensor {odd[0]!r} differs from the bundle's initial weights",
                        "model.manifest")
    return arrays


def train_seed(request: SiloJobRequest, seed: int) -> int:
    """Different shuffles per round and silo, identical for a re-run of the same job."""
    key = f"{seed}:{request.run_id}:{request.round}:{request.silo}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


def run_task(request: SiloJobRequest, bundle: VerifiedBundle, io: SiloIO,
             pipeline: SiloPipeline) -> tuple[EvalFigures, Update | None, dict | None]:
    """Evaluate the incoming global model on the test part; in train mode also train from it (with the
    pipeline's hooks) and put the trained model through the pipeline's transforms.

    Returns (evaluation figures, the update, training metrics); the last two are None when evaluating only.
    """
    import torch

    from fedfunc.tasks import loop
    from fedfunc.tasks.data import DataError, DataReader
    from fedfunc.tasks.loader import TaskError, build_model, check_manifest, load_weights

    torch.set_num_threads(1)
    task, initial = load_task(bundle)
    global_arrays = fetch_global_model(io, request, initial)

    def read(part: str):
        reader = DataReader(io.data, layout.silo_data(request.task, part))
        try:
            dataset = task.read_data(reader)
            if len(dataset) == 0:
                raise DataError(reader.label, f"no {part} examples")
            return dataset
        except DataError as e:
            raise JobFailed(str(e), "data.schema") from None

    try:
        model = build_model(task)
        load_weights(model, global_arrays)
        figures = loop.evaluate(task, model, read("test"))
        if request.mode == "evaluate":
            return figures, None, None
        stats = loop.train(task, model, read("train"), seed=train_seed(request, task.hp.seed), hooks=pipeline.hooks())
        arrays = model_to_arrays(model)
        check_manifest(ModelManifest.from_arrays(arrays), ModelManifest.from_arrays(initial), "the trained model")
        update = pipeline.finish(arrays, global_arrays)
    except TaskError as e:
        raise JobFailed(e.message, e.rule) from None
    except loop.NeedsPlatformLoop as e:
        raise JobFailed(str(e), "task.own_training") from None
    except loop.TaskOutputError as e:
        raise JobFailed(str(e), "task.output") from None
    return figures, update, {"loss": stats.loss, "num_samples": stats.num_samples, "epochs": stats.epochs}


def package(request: SiloJobRequest, figures: EvalFigures, update: Update | None,
            metrics: dict[str, float | int] | None, times: Mapping[str, datetime] | None = None) -> dict[str, bytes]:
    """The artifacts to publish: canonical JSON, fixed metadata (the update's payload kind and history
    included), and when the job passed its steps (``TIME_KEYS``; only figures for the round's timeline)."""
    meta = {"run": request.run_id, "round": str(request.round), "silo": request.silo, "nonce": request.nonce}
    artifacts = {layout.EVALUATION: figures.encode(meta)}
    if update is not None:
        stamps = {TIME_KEYS[step]: at.astimezone(timezone.utc).isoformat() for step, at in (times or {}).items()}
        artifacts[layout.METRICS] = json.dumps(metrics, sort_keys=True).encode()
        artifacts[layout.UPDATE] = encode(update.arrays, {**meta, "num_samples": str(metrics["num_samples"]),
                                                          **to_metadata(update), **stamps})
    return artifacts


PUBLISH_ORDER = (layout.METRICS, layout.EVALUATION, layout.UPDATE)


def publish(outbox: Outbox, prefix: str, artifacts: dict[str, bytes]) -> None:
    """The update last (its BlobCreated event means the job is complete); an evaluate-only job's last
    blob is its evaluation."""
    for name in PUBLISH_ORDER:
        if name in artifacts:
            outbox.create(prefix + name, artifacts[name])


def final_artifact(mode: str) -> str:
    """The blob whose arrival means a job of ``mode`` completed."""
    return layout.UPDATE if mode == "train" else layout.EVALUATION


def report_failure(outbox: Outbox, prefix: str, reason: str, rule: str | None, mode: str = "train") -> None:
    """Publish ``failed.json`` unless the job already published its final artifact or an earlier failure."""
    if outbox.read(prefix + final_artifact(mode)) is not None:
        return
    body = json.dumps({"reason": reason, "rule": rule}, sort_keys=True).encode()
    try:
        outbox.create(prefix + layout.FAILED, body)
    except OutboxConflict:
        log.info("an earlier failed.json stays at %s", prefix)


def _published(io: SiloIO, request: SiloJobRequest, prefix: str) -> dict[str, bytes] | None:
    """What an earlier run of this job published, if it finished (its last artifact is there)."""
    if io.outbox.read(prefix + final_artifact(request.mode)) is None:
        return None
    return {n: d for n in PUBLISH_ORDER if (d := io.outbox.read(prefix + n)) is not None}


def run_job(request: SiloJobRequest, io: SiloIO, now: datetime | None = None,
            times: Mapping[str, datetime] | None = None) -> dict[str, bytes]:
    """Run the pipeline; on failure publish ``failed.json`` and raise ``JobFailed``.

    A re-run of a job whose artifacts are already published does nothing and returns them (the update
    carries its step times, so retraining could not rewrite the same bytes). ``times`` are the steps
    before this call that the caller saw (a worker pool: ``queued``, ``started``).
    """
    times = {"started": datetime.now(timezone.utc), **(times or {})}
    prefix = layout.outbox_prefix(request.run_id, request.round, request.silo)
    published = _published(io, request, prefix)
    if published is not None:
        return published
    trail = SiloAuditTrail(io.outbox, request.silo)
    where = dict(run=request.run_id, round=request.round, job=request.job_key)
    authentic = False
    try:
        if request.outbox_prefix != prefix:
            raise Refused("request.outbox_prefix", request.outbox_prefix, f"this job's outbox prefix is {prefix!r}")
        policy = authenticate(request, io, now)
        authentic = True
        bundle, pipeline = admit(request, policy, io, trail, now)
        trail.append("job_started", **where, mode=request.mode, bundle=bundle.code_hash, signer=bundle.signer)
        figures, update, metrics = run_task(request, bundle, io, pipeline)
        artifacts = package(request, figures, update, metrics, {**times, "trained": datetime.now(timezone.utc)})
        check_egress(artifacts, mode=request.mode, manifest=ModelManifest.from_arrays(decode(bundle.weights)[0]),
                     num_classes=bundle.manifest.num_classes,
                     expected={"run": request.run_id, "round": request.round, "silo": request.silo,
                               "nonce": request.nonce}, side=bundle.config)
        publish(io.outbox, prefix, artifacts)
        for name, data in artifacts.items():
            trail.append("artifact_egress", **where, name=prefix + name, sha256=sha256(data), size=len(data))
        return artifacts
    except Exception as e:
        if isinstance(e, Refused):
            failure = JobFailed(str(e), e.rule)
            trail.append("job_refused", **where, rule=e.rule, object=e.object, message=e.message)
        else:
            failure = e if isinstance(e, JobFailed) else JobFailed(f"{type(e).__name__}: {e}")
        if authentic:
            report_failure(io.outbox, prefix, failure.reason, failure.rule, request.mode)
        raise failure from e
