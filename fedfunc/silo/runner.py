"""The silo job: the one pipeline every silo job runs, locally and on AML.

authenticate (the orchestrator's ticket, against the silo's own policy) → admit (policy rules → signed
code bundle → installed code; all before any data is read)
→ fetch the global model (the ticket's URL and sha256) → read data → train → package update + metrics → egress check
→ publish to the outbox (metrics first, then the update, whose BlobCreated event tells the orchestrator).
Any failure or refusal of an authenticated job publishes ``failed.json`` (with the rule) instead and
nothing else; an unauthenticated job is refused without writing into the round at all. The silo's
own audit trail records the start, the refusal or each artifact that left. The job never calls the
orchestrator.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timezone

import numpy as np

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.security import Refused
from fedfunc.security.audit import SiloAuditTrail
from fedfunc.security.bundle import check_installed_code, check_request, verify_bundle
from fedfunc.security.egress import check_egress
from fedfunc.security.policy import SiloPolicy, enforce, parse_policy, recent_usage
from fedfunc.security.tickets import verify_ticket
from fedfunc.silo.io import Outbox, OutboxConflict, SiloIO
from fedfunc.weights import TIME_KEYS, ModelManifest, decode, encode, load_arrays_into, model_to_arrays, sha256

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """A silo job could not produce an update; ``rule`` names the check that stopped it, if any."""

    def __init__(self, reason: str, rule: str | None = None):
        super().__init__(reason)
        self.reason, self.rule = reason, rule


def authenticate(request: SiloJobRequest, io: SiloIO, now: datetime | None = None) -> SiloPolicy:
    """The silo's policy, if the request carries a ticket from an orchestrator key that policy trusts,
    for exactly this silo, run, round, nonce, code hash and global model (URL and sha256); else ``Refused``.

    Only an authenticated job may speak for a round (publish ``failed.json`` in its slot): a forged
    job is refused without touching the round, so it cannot knock the silo out of it.
    """
    policy = parse_policy(io.read_policy())
    verify_ticket(request.ticket, policy.orchestrator_keys, silo=policy.silo, run=request.run_id,
                  round=request.round, code_hash=(request.bundle or {}).get("code_hash", ""), nonce=request.nonce,
                  model_url=request.model_url, model_sha256=request.model_sha256, now=now)
    return policy


def admit(request: SiloJobRequest, policy: SiloPolicy, trail: SiloAuditTrail | None = None,
          now: datetime | None = None) -> None:
    """Refuse (``Refused``) unless the silo's policy allows the job and a trusted signer signed its code.

    ``trail`` (the silo's audit trail) supplies the jobs already run today for the daily limit.
    """
    usage = recent_usage(trail.recent(now), request.job_key, now) if trail else 0
    enforce(policy, request, usage)
    bundle = verify_bundle(request.bundle, policy.trusted_signers)
    check_request(bundle, request)
    check_installed_code(bundle)


def read_training_data(io: SiloIO, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The silo's partition: ``x`` float32 (n, ...) and ``y`` int64 (n,)."""
    from fedfunc.tasks import xy_from_bytes

    try:
        x, y = xy_from_bytes(io.read_data(task))
    except ValueError as e:
        raise JobFailed(f"data/{layout.silo_data(task)}: {e}", "data.schema") from None
    if len(y) == 0 or y.ndim != 1:
        raise JobFailed(f"data/{layout.silo_data(task)}: need y of shape (n,), n ≥ 1; got {y.shape}", "data.schema")
    return x, y


def fetch_global_model(io: SiloIO, request: SiloJobRequest) -> dict[str, np.ndarray]:
    """The global model's arrays, refused unless the downloaded bytes have the sha256 the ticket binds
    (``authenticate`` checked that the request's ``model_sha256`` is the ticket's)."""
    data = io.read_model(request)
    digest = sha256(data)
    if digest != request.model_sha256:
        raise Refused("ticket.model_bytes", f"global model {request.model_url.split('?')[0]}",
                      f"downloaded bytes have sha256 {digest}, the ticket binds {request.model_sha256}")
    return decode(data)[0]


def _train_seed(request: SiloJobRequest) -> int:
    """Different shuffles per round and silo, identical for a re-run of the same job."""
    key = f"{request.hyperparams.seed}:{request.run_id}:{request.round}:{request.silo}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


def train(request: SiloJobRequest, global_arrays: dict[str, np.ndarray], x: np.ndarray,
          y: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float | int]]:
    """Local training from the global weights; deterministic (one thread, derived seed)."""
    import torch

    from fedfunc.tasks import get_task

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


def package(request: SiloJobRequest, arrays: dict[str, np.ndarray], metrics: dict[str, float | int],
            times: Mapping[str, datetime] | None = None) -> dict[str, bytes]:
    """The artifacts to publish: canonical JSON, the round's identity in the update's metadata, and when
    the job passed its steps (``TIME_KEYS``; only figures for the round's timeline)."""
    meta = {"run": request.run_id, "round": str(request.round), "silo": request.silo, "nonce": request.nonce,
            "num_samples": str(metrics["num_samples"]),
            **{TIME_KEYS[step]: at.astimezone(timezone.utc).isoformat() for step, at in (times or {}).items()}}
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


def run_job(request: SiloJobRequest, io: SiloIO, now: datetime | None = None,
            times: Mapping[str, datetime] | None = None) -> dict[str, bytes]:
    """Run the pipeline; on failure publish ``failed.json`` and raise ``JobFailed``.

    A re-run of a job whose update is already published does nothing and returns the published artifacts
    (the update carries its step times, so retraining could not rewrite the same bytes). ``times`` are
    the steps before this call that the caller saw (a worker pool: ``queued``, ``started``).
    """
    times = {"started": datetime.now(timezone.utc), **(times or {})}
    prefix = layout.outbox_prefix(request.run_id, request.round, request.silo)
    published = {name: io.outbox.read(prefix + name) for name in (layout.METRICS, layout.UPDATE)}
    if published[layout.UPDATE] is not None:
        return published
    trail = SiloAuditTrail(io.outbox, request.silo)
    where = dict(run=request.run_id, round=request.round, job=request.job_key)
    authentic = False
    try:
        if request.outbox_prefix != prefix:
            raise Refused("request.outbox_prefix", request.outbox_prefix, f"this job's outbox prefix is {prefix!r}")
        policy = authenticate(request, io, now)
        authentic = True
        admit(request, policy, trail, now)
        trail.append("job_started", **where)
        global_arrays = fetch_global_model(io, request)  # before any data is read: a wrong model is refused
        x, y = read_training_data(io, request.task)
        arrays, metrics = train(request, global_arrays, x, y)
        artifacts = package(request, arrays, metrics, {**times, "trained": datetime.now(timezone.utc)})
        check_egress(artifacts, manifest=ModelManifest.from_arrays(global_arrays),
                     expected={"run": request.run_id, "round": request.round, "silo": request.silo,
                               "nonce": request.nonce})
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
            report_failure(io.outbox, prefix, failure.reason, failure.rule)
        raise failure from e
