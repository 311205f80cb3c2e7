"""Orchestrator-side steps of a run: initial model, round manifest, silo job requests, aggregation, evaluation."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TypeVar

from azure.core.exceptions import AzureError

from fedfunc import layout, weights
from fedfunc.aggregation import get_strategy
from fedfunc.contracts import Hyperparams, ModelRef, OutboxReader, SiloJobBackend, SiloJobRequest
from fedfunc.coordinator.store import RunStore, to_json
from fedfunc.protocol import (AggregateOrder, AggregateResult, JobTimes, Received, Rejection, RoundJob, RoundPlan,
                              RunStart, RunState, SampleCap, SiloJobStarted, UpdateNotice)
from fedfunc.security import Refused
from fedfunc.security.egress import MAX_METRICS_BYTES, check_metrics
from fedfunc.security.update_bound import above_median, resolve_bound
from fedfunc.spec import RunSpec
from fedfunc.tasks.registry import get_task

T, R = TypeVar("T"), TypeVar("R")
READERS = 8                      # outbox reads in flight while the round aggregates
READ_AHEAD_BYTES = 16 << 20      # ... within this many bytes of updates not yet aggregated


def model_ref(path: str, data: bytes) -> ModelRef:
    return ModelRef(path=path, sha256=weights.sha256(data))


def ensure_eval_set(store: RunStore, task_name: str) -> None:
    """The held-out set the orchestrator evaluates on. Built-in tasks ship one; it never goes to silos."""
    path = layout.eval_set(task_name)
    if store.get_bytes(layout.EVALDATA, path) is None:
        ds = get_task(task_name).load_dataset()
        store.create_once(layout.EVALDATA, path, weights.encode({"x": ds.x_test, "y": ds.y_test}))


def init_run(store: RunStore, state: RunState) -> RunStart:
    """Write the spec and the round-0 global model (once: a retry finds and returns the first one), and fix
    the run's bound on updates from the bundle, the spec or that model."""
    run_id, spec = state.run_id, state.spec
    path = layout.global_model(run_id, 0)
    model = get_task(spec.task).build_model(spec.seed)
    store.create_once(layout.MODELS, path, weights.encode(weights.model_to_arrays(model), {"run": run_id, "round": "0"}))
    store.put_json(layout.RUNS, layout.run_spec(run_id), spec.model_dump(mode="json"))
    ensure_eval_set(store, spec.task)
    data = store.get_bytes(layout.MODELS, path)
    bound = resolve_bound(spec.max_update_norm, spec.bundle, weights.decode(data)[0])
    return RunStart(model=model_ref(path, data), update_bound=bound)


def prepare_round(store: RunStore, ready_silos: list[str], job: RoundJob,
                  sample_caps: dict[str, int] | None = None) -> RoundPlan:
    """Fix the round's silos (and their registered sample caps) and write its manifest. A retry returns the
    manifest already written, so the silo set cannot change between attempts even if the registry did."""
    spec = job.spec
    path = layout.round_manifest(job.run_id, job.round)
    if spec.silos == "all":
        silos, excluded = sorted(ready_silos), {}
    else:
        silos = [s for s in spec.silos if s in ready_silos]
        excluded = {s: "not ready (disabled, onboarding or removed)" for s in spec.silos if s not in ready_silos}
    manifest = {"run": job.run_id, "round": job.round, "nonce": job.nonce, "model": job.model.wire(),
                "deadline": job.deadline.isoformat() if job.deadline else None, "silos": silos,
                "excluded": excluded, "needed": spec.needed(len(silos)),
                "sample_caps": {s: c for s, c in sorted((sample_caps or {}).items()) if s in silos},
                "update_bound": job.update_bound.wire() if job.update_bound else None}
    if not store.create_once(layout.RUNS, path, to_json(manifest)):
        existing = store.get_json(layout.RUNS, path)
        if existing["nonce"] == job.nonce:
            return RoundPlan(silos=existing["silos"], manifest=path)
        store.put_json(layout.RUNS, path, manifest)  # a manifest of an earlier attempt at this round
    return RoundPlan(silos=silos, manifest=path)


def local_hyperparams(spec: RunSpec) -> Hyperparams:
    """What every silo trains with: the spec's (equal to the signed bundle's), else the task's defaults.
    Silo jobs derive their own per-round shuffling seed from it, so it is the same for every job."""
    if spec.hyperparams is not None:
        return spec.hyperparams
    return get_task(spec.task).default_hyperparams.model_copy(update={"seed": spec.seed})


def silo_job_request(store: RunStore, job: RoundJob, silo: str, ticket: str | None = None) -> SiloJobRequest:
    return SiloJobRequest(
        run_id=job.run_id, round=job.round, silo=silo, nonce=job.nonce, task=job.spec.task,
        hyperparams=local_hyperparams(job.spec),
        model_url=store.model_read_url(job.model.path), model_sha256=job.model.sha256,
        outbox_prefix=layout.outbox_prefix(job.run_id, job.round, silo), ticket=ticket, bundle=job.spec.bundle,
        deadline=job.deadline)


def start_silo_job(backend: SiloJobBackend, request: SiloJobRequest) -> SiloJobStarted:
    """Submit; a submission error makes the silo fail this round (with the backend's message), not the round."""
    submitted = datetime.now(timezone.utc)
    try:
        return SiloJobStarted(silo=request.silo, job_id=backend.submit(request), submitted=submitted)
    except Exception as e:  # any backend error: the round goes on at quorum
        return SiloJobStarted(silo=request.silo, error=f"job submission failed: {type(e).__name__}: {e}")


def job_times(metadata: dict[str, str]) -> JobTimes:
    """The silo's own step times from its update's metadata; a missing or unreadable one is left out
    (they only draw the round's timeline)."""
    times = {}
    for step, key in weights.TIME_KEYS.items():
        try:
            times[step] = datetime.fromisoformat(metadata[key])
        except (KeyError, ValueError):
            pass
    return JobTimes(**times)


# The last global models this process read or wrote, by sha256 (a model never changes under its hash):
# the next round's aggregation and this round's evaluation find the model aggregation just wrote.
_MODELS: OrderedDict[str, dict] = OrderedDict()
MODEL_CACHE, MODEL_CACHE_BYTES = 2, 64 << 20


def _keep_model(sha256: str, arrays: dict) -> None:
    for a in arrays.values():
        a.setflags(write=False)  # shared by later callers: nobody may change it in place
    if sum(a.nbytes for a in arrays.values()) <= MODEL_CACHE_BYTES:
        _MODELS[sha256] = arrays
        while len(_MODELS) > MODEL_CACHE:
            _MODELS.popitem(last=False)


def load_global(store: RunStore, ref: ModelRef) -> dict:
    """The global model's arrays (read-only), checked against its sha256 when read from storage."""
    if ref.sha256 in _MODELS:
        return dict(_MODELS[ref.sha256])
    data = store.get_bytes(layout.MODELS, ref.path)
    if data is None:
        raise FileNotFoundError(f"global model {ref.path} is missing from {layout.MODELS}")
    if weights.sha256(data) != ref.sha256:
        raise ValueError(f"global model {ref.path} does not match its recorded sha256")
    arrays, _ = weights.decode(data)
    _keep_model(ref.sha256, arrays)
    return dict(arrays)


def read_ahead(items: list[T], fetch: Callable[[T], R], size: Callable[[T], int], budget: int,
               workers: int = READERS) -> Iterator[R]:
    """``fetch(item)`` for every item, yielded in order, fetched ``workers`` at a time ahead of the consumer
    while the bytes fetched and not yet consumed stay within ``budget`` (one item is always allowed)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="outbox-read") as pool:
        pending: deque[tuple[int, Future]] = deque()
        held, upcoming = 0, iter(items)
        nxt = next(upcoming, None)
        for _ in items:
            while nxt is not None and (not pending or held + size(nxt) <= budget):
                pending.append((size(nxt), pool.submit(fetch, nxt)))
                held += pending[-1][0]
                nxt = next(upcoming, None)
            n, future = pending.popleft()
            yield future.result()
            held -= n


def aggregate_round(store: RunStore, read_outbox: OutboxReader, order: AggregateOrder) -> AggregateResult:
    """Validate every update and stream the accepted ones through the run's strategy.

    Exactly once per round: the result is recorded create-only in ``aggregate.json``; a re-run
    (after a crash, or a duplicate activity) returns that record instead of aggregating again.
    Below quorum, nothing is written: the last good global model stays the run's model. The silo
    checked its artifacts before they left; every check runs again here, on the bytes received,
    with the run's bound on ‖update − global‖₂ (``fedfunc.security.update_bound``). Each update is
    weighted by its ``num_samples`` capped by the silo's registered cap and the spec's.
    With ``max_update_norm_vs_median`` every update is read twice: once to measure the round's norms,
    once to aggregate those within the rule (the same bytes: a blob that changed in between is rejected).
    """
    job, spec = order.job, order.job.spec
    record_path = layout.aggregate_record(job.run_id, job.round)
    with ThreadPoolExecutor(3) as pool:  # three independent reads, one round trip
        done, manifest_doc, global_arrays = pool.submit(store.get_json, layout.RUNS, record_path), \
            pool.submit(store.get_json, layout.RUNS, job.manifest), pool.submit(load_global, store, job.model)
    if done.result() is not None:
        return AggregateResult.model_validate(done.result())
    manifest_doc, global_arrays = manifest_doc.result(), global_arrays.result()
    manifest = weights.ModelManifest.from_arrays(global_arrays)
    max_bytes = int(spec.max_update_mb * 2**20)
    bound = job.update_bound or resolve_bound(spec.max_update_norm, spec.bundle, global_arrays)
    caps = manifest_doc.get("sample_caps") or {}
    rejected: dict[str, Rejection] = {}
    received: dict[str, Received] = {}
    samples: dict[str, int] = {}
    capped: dict[str, SampleCap] = {}

    def fetch(item: tuple[str, UpdateNotice]) -> tuple[bytes, bytes] | Exception:
        """An update and its metrics, as read from the silo's outbox (a read error is the silo's rejection)."""
        silo, notice = item
        try:
            return (read_outbox(silo, notice.path, max_bytes),
                    read_outbox(silo, notice.path.removesuffix(layout.UPDATE) + layout.METRICS, MAX_METRICS_BYTES))
        except (AzureError, ValueError) as e:
            return e

    def check(silo: str, path: str, read: tuple[bytes, bytes] | Exception) -> weights.ValidatedUpdate | None:
        """Re-check one update and its metrics; None (with the reason recorded) if rejected."""
        expected = {"run": job.run_id, "round": job.round, "silo": silo, "nonce": job.nonce,
                    "silos": manifest_doc["silos"]}
        try:
            if isinstance(read, Exception):
                raise read
            data, metrics_bytes = read
            update = weights.validate_update(data, manifest, expected=expected, global_arrays=global_arrays,
                                             max_bytes=max_bytes, max_norm=bound.max_norm)
            metrics = check_metrics(metrics_bytes)
            digest = weights.sha256(data)
            if silo in received and received[silo].sha256 != digest:
                raise ValueError(f"{path} changed between reads (sha256 {received[silo].sha256} then {digest})")
        except (weights.UpdateRejected, Refused, AzureError, ValueError) as e:
            why = f"{e} — {bound.describe()}" if getattr(e, "rule", None) == "norm" else str(e)
            rejected[silo] = Rejection(silo=silo, reason=why)
            received.pop(silo, None)
            return None
        received[silo] = Received(path=path, sha256=digest, metrics=metrics, norm=update.norm,
                                  times=job_times(update.metadata))
        cap = sample_cap(silo, update.num_samples, caps.get(silo), spec.max_samples_per_silo)
        if cap is not None:
            capped[silo] = cap
            update = dataclasses.replace(update, num_samples=cap.used)
        samples[silo] = update.num_samples
        return update

    def checked(items: list[tuple[str, UpdateNotice]]) -> Iterator[weights.ValidatedUpdate]:
        """The accepted updates of ``items``, in silo order; reads run ahead on threads within
        ``READ_AHEAD_BYTES`` (one update at least), and each update is dropped before the one after the
        read-ahead is downloaded."""
        reads = read_ahead(items, fetch, lambda item: item[1].size or manifest.nbytes, READ_AHEAD_BYTES)
        for (silo, notice), read in zip(items, reads):
            update = check(silo, notice.path, read)
            read = None
            if update is not None:
                yield update
            update = None

    candidates = sorted(order.updates.items())
    if spec.max_update_norm_vs_median is not None:
        for _ in checked(candidates):  # first pass: the round's norms, each update dropped once measured
            pass
        outliers = above_median({s: r.norm for s, r in received.items()}, spec.max_update_norm_vs_median)
        rejected.update({s: Rejection(silo=s, reason=why) for s, why in outliers.items()})
        candidates = [(s, n) for s, n in candidates if s in received and s not in outliers]
        samples.clear()
        capped.clear()

    strategy = get_strategy(spec.aggregator)
    try:
        new_arrays = strategy.aggregate(global_arrays, checked(candidates))
    except ValueError:
        if samples:  # a real aggregation error, not "no update accepted"
            raise
        return AggregateResult(rejected=_sorted(rejected), capped=capped, update_bound=bound)
    received = {s: r for s, r in received.items() if s in samples}
    result = AggregateResult(accepted=sorted(samples), rejected=_sorted(rejected), samples=samples,
                             received=received, num_samples=sum(samples.values()), capped=capped,
                             update_bound=bound)
    if len(samples) < manifest_doc["needed"]:
        return result
    path = layout.global_model(job.run_id, job.round + 1)
    data = weights.encode(new_arrays, {"run": job.run_id, "round": str(job.round + 1)})
    store.put_bytes(layout.MODELS, path, data)
    result = result.model_copy(update={"model": model_ref(path, data)})
    _keep_model(result.model.sha256, weights.decode(data)[0])
    if not store.create_once(layout.RUNS, record_path, to_json(result.wire())):
        return AggregateResult.model_validate(store.get_json(layout.RUNS, record_path))
    return result


def _sorted(rejected: dict[str, Rejection]) -> list[Rejection]:
    return [rejected[s] for s in sorted(rejected)]


def sample_cap(silo: str, reported: int, registered: int | None, spec_cap: int | None) -> SampleCap | None:
    """How many samples a silo's update is weighted by, if less than it reported: the orchestrator cannot
    count a silo's data, so it caps the silo's claim by what was registered for it and by the spec."""
    limits = [(c, by) for c, by in ((registered, "the silo's registered max_samples"),
                                    (spec_cap, "the spec's max_samples_per_silo")) if c is not None and c < reported]
    if not limits:
        return None
    used, by = min(limits)
    return SampleCap(reported=reported, used=used, by=by)


def evaluate(store: RunStore, job: RoundJob) -> dict:
    """The global model's loss and accuracy on the orchestrator's held-out set."""
    task = get_task(job.spec.task)
    data = store.get_bytes(layout.EVALDATA, layout.eval_set(job.spec.task))
    if data is None:
        raise FileNotFoundError(f"no held-out set at {layout.EVALDATA}/{layout.eval_set(job.spec.task)}")
    arrays, _ = weights.decode(data)
    model = task.build_model(0)
    weights.load_arrays_into(model, load_global(store, job.model))
    return task.evaluate(model, arrays["x"], arrays["y"])
