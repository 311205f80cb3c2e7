"""Orchestrator-side steps of a run: initial model, round manifest, silo job requests, aggregation, pooled
evaluation. Tensors and figures only: no task code is imported here (the model's round-0 weights come
from the signed bundle, every evaluation from the silos)."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from azure.core.exceptions import AzureError

from fedfunc import evaluation, layout, pipeline, weights
from fedfunc.aggregation import (BlockPass, BlockUpdate, CheckedUpdate, DeltaUpdate, RangeUpdate, Reweighted, State,
                                 StateCorrupt, StateError, StateMissing, Strategy, TooFewUpdates, decode_state,
                                 encode_state)
from fedfunc.aggregation.base import block_for
from fedfunc.aggregation.sources import in_key_order
from fedfunc.contracts import BlobRange, JobMode, ModelRef, OutboxOpener, OutboxReader, SiloJobBackend, SiloJobRequest
from fedfunc.coordinator.bundles import open_stored
from fedfunc.coordinator.store import RunStore, to_json
from fedfunc.pipeline import SiloSide
from fedfunc.protocol import (AggregateOrder, AggregateResult, EvaluationOrder, JobTimes, Received, Rejection,
                              RoundEvaluation, RoundJob, RoundPlan, RoundResult, RunStart, RunState, SampleCap,
                              SiloJobStarted, UpdateNotice)
from fedfunc.security import Refused
from fedfunc.security.bundle import BundleManifest
from fedfunc.security.egress import MAX_METRICS_BYTES, check_metrics
from fedfunc.security.update_bound import above_median, resolve_bound

# A round's updates are downloaded whole (one request each, then read from memory) while they fit in this
# many bytes together; otherwise each is read by byte ranges, block by block (memory O(updates × block +
# model)), with RANGE_READERS threads reading the next block while the current one is combined.
WHOLE_READ_BUDGET = 64 << 20
RANGE_READERS = 8
T, R = TypeVar("T"), TypeVar("R")
OUTBOX_READERS = 8  # silos' outboxes read side by side (reads are round trips, not CPU)


def model_ref(path: str, data: bytes, state_path: str, state: bytes) -> ModelRef:
    return ModelRef(path=path, sha256=weights.sha256(data), state_path=state_path, state_sha256=weights.sha256(state))


def init_run(store: RunStore, state: RunState) -> RunStart:
    """Write the spec, a copy of the bundle's manifest, the round-0 global model — the bundle's signed
    initial weights — and the strategy's initial state (once: a retry finds and returns what the first
    attempt wrote), and fix the run's bound on updates from the signed clip norm, the spec or that model."""
    run_id, spec = state.run_id, state.spec
    path = layout.global_model(run_id, 0)
    if store.get_bytes(layout.MODELS, path) is None:
        opened = open_stored(store, spec.bundle)
        arrays, _ = weights.decode(opened.weights())
        store.put_json(layout.RUNS, layout.run_bundle_manifest(run_id), opened.manifest.model_dump(mode="json"))
        store.create_once(layout.MODELS, path, weights.encode(arrays, {"run": run_id, "round": "0"}))
    store.put_json(layout.RUNS, layout.run_spec(run_id), spec.model_dump(mode="json"))
    data = store.get_bytes(layout.MODELS, path)
    initial = weights.decode(data)[0]
    strategy = spec.strategy.build()
    state_path = layout.strategy_state(run_id, 0)
    store.create_once(layout.RUNS, state_path, encode_state(strategy.initial_state(initial), strategy.describe()))
    bound = resolve_bound(spec.max_update_norm, silo_side(store, run_id).clip_norm, initial)
    return RunStart(model=model_ref(path, data, state_path, store.get_bytes(layout.RUNS, state_path)),
                    update_bound=bound)


def run_manifest(store: RunStore, run_id: str) -> BundleManifest:
    doc = store.get_json(layout.RUNS, layout.run_bundle_manifest(run_id))
    if doc is None:
        raise FileNotFoundError(f"run {run_id} has no {layout.run_bundle_manifest(run_id)} (init_run writes it)")
    return BundleManifest.model_validate(doc)


def prepare_round(store: RunStore, ready_silos: list[str], job: RoundJob,
                  sample_caps: dict[str, int] | None = None) -> RoundPlan:
    """Fix the round's silos and evaluators (and the silos' registered sample caps) and write its manifest.
    A retry returns the manifest already written, so the silo set cannot change between attempts even if
    the registry did."""
    spec = job.spec
    path = layout.round_manifest(job.run_id, job.round)
    wanted = [s for s in sorted(ready_silos) if s not in spec.evaluators] if spec.silos == "all" else spec.silos
    silos = [s for s in wanted if s in ready_silos]
    evaluators = [s for s in spec.evaluators if s in ready_silos]
    excluded = {s: "not ready (disabled, onboarding or removed)"
                for s in [*wanted, *spec.evaluators] if s not in ready_silos}
    manifest = {"run": job.run_id, "round": job.round, "nonce": job.nonce, "model": job.model.wire(),
                "deadline": job.deadline.isoformat() if job.deadline else None, "silos": silos,
                "evaluators": evaluators, "excluded": excluded, "evaluate_only": job.evaluate_only,
                "needed": 0 if job.evaluate_only else spec.needed(len(silos)),
                "sample_caps": {s: c for s, c in sorted((sample_caps or {}).items()) if s in silos},
                "update_bound": job.update_bound.wire() if job.update_bound else None}
    if not store.create_once(layout.RUNS, path, to_json(manifest)):
        existing = store.get_json(layout.RUNS, path)
        if existing["nonce"] == job.nonce:
            return RoundPlan(silos=existing["silos"], evaluators=existing.get("evaluators", []), manifest=path)
        store.put_json(layout.RUNS, path, manifest)  # a manifest of an earlier attempt at this round
    return RoundPlan(silos=silos, evaluators=evaluators, manifest=path)


_MODES: OrderedDict[tuple[str, int], dict[str, JobMode]] = OrderedDict()
MODES_KEPT = 64


def round_modes(store: RunStore, run_id: str, round_: int) -> dict[str, JobMode] | None:
    """Each silo's job in a round, from its manifest (None before it is written). Kept per process: a
    silo's mode in a round cannot change (evaluators are fixed by the run's spec, an evaluate-only round
    by its index), even when an earlier attempt's manifest is rewritten."""
    if (run_id, round_) not in _MODES:
        path = layout.round_manifest(run_id, round_)
        doc = store.get_json(layout.RUNS, path)
        if doc is None:
            return None
        plan = RoundPlan(silos=doc["silos"], evaluators=doc.get("evaluators", []), manifest=path)
        _MODES[(run_id, round_)] = plan.modes(bool(doc.get("evaluate_only")))
        while len(_MODES) > MODES_KEPT:
            _MODES.popitem(last=False)
    return _MODES[(run_id, round_)]


def silo_job_request(store: RunStore, job: RoundJob, silo: str, mode: JobMode, ticket: str | None) -> SiloJobRequest:
    return SiloJobRequest(
        run_id=job.run_id, round=job.round, silo=silo, nonce=job.nonce, task=job.spec.task, mode=mode,
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


def load_state(store: RunStore, ref: ModelRef, strategy: Strategy) -> State:
    """The strategy state that goes with ``ref``'s model. Missing, altered or written by another strategy:
    ``StateError`` — a run never silently restarts its optimizer."""
    if ref.state_path is None:
        raise StateMissing(f"the model reference {ref.path} carries no strategy state")
    data = store.get_bytes(layout.RUNS, ref.state_path)
    if data is not None and weights.sha256(data) != ref.state_sha256:
        raise StateCorrupt(f"{layout.RUNS}/{ref.state_path} does not match its recorded sha256")
    return decode_state(data, strategy.describe())


class UnreadableUpdate(Exception):
    """A range read of one silo's update failed mid-aggregation (the blob changed or vanished)."""

    def __init__(self, silo: str, error: Exception):
        super().__init__(f"{silo}: {type(error).__name__}: {error}")
        self.silo, self.error = silo, error


def silo_side(store: RunStore, run_id: str) -> SiloSide:
    """What the run's signed bundle fixes for the silo side (FedProx's μ, the update transforms)."""
    return pipeline.silo_side(run_manifest(store, run_id).config)


@dataclass(frozen=True)
class Opened:
    """An update opened for aggregation: a re-readable block source of model weights (a delta payload is
    read as global + delta), its sha256 if it was read whole, and its payload kind and history."""

    source: BlockUpdate
    sha256: str | None
    kind: pipeline.Payload
    history: list[pipeline.Step]
    times: JobTimes   # when the silo job passed its steps (its own figures, for the round's timeline only)


def open_update(blob: BlobRange, silo: str, global_arrays: dict, *, expected: dict, max_bytes: int,
                whole_read_bytes: int, side: SiloSide) -> Opened:
    """An update with its header rules checked, and its transform history against the signed ``side``.

    Up to ``whole_read_bytes``: one download, blocks are views of it. Larger: range reads of the blob
    pinned to the version opened; a failed read raises ``UnreadableUpdate`` naming the silo."""
    if blob.size > max_bytes:
        raise weights.UpdateRejected("size", f"{blob.size} bytes exceeds the {max_bytes}-byte bound")
    manifest = weights.ModelManifest.from_arrays(global_arrays)
    digest = None
    if blob.size <= whole_read_bytes:
        data = memoryview(blob.read(0, blob.size))
        read, digest = (lambda o, n: data[o:o + n]), weights.sha256(data)
    else:
        def read(offset: int, length: int) -> bytes:
            try:
                return blob.read(offset, length)
            except AzureError as e:
                raise UnreadableUpdate(silo, e) from None
    source = RangeUpdate(read, blob.size, manifest, expected=expected, max_bytes=max_bytes)
    kind, history = pipeline.from_metadata(source.metadata)
    pipeline.check_history(kind, history, side)
    return Opened(DeltaUpdate(source, global_arrays) if kind == "delta" else source, digest, kind, history,
                  job_times(source.metadata))


def aggregate_round(store: RunStore, read_outbox: OutboxReader, open_outbox: OutboxOpener, order: AggregateOrder, *,
                    whole_read_budget: int = WHOLE_READ_BUDGET) -> AggregateResult:
    """Check every update and combine the accepted ones with the run's strategy and its state.

    Exactly once per round: the new global model and state are written, then the result is recorded
    create-only in ``aggregate.json`` (the commit point); a re-run (after a crash, or a duplicate
    activity) returns that record instead of aggregating again, and a re-run before it recomputes the
    same bytes. Below quorum, or when the strategy cannot aggregate (a robust rule with too few
    updates, an unusable state), nothing is written: the last good model and its state stay the run's.
    The silo checked its artifacts before they left; every check runs again here, on the bytes
    received: header rules when an update is opened, value rules (finite, the run's bound on
    ‖update − global‖₂, ``fedfunc.security.update_bound``) inside the strategy's one pass over the blocks.
    Each update is weighted by its ``num_samples`` capped by the silo's registered cap and the spec's.
    With ``max_update_norm_vs_median`` a first pass measures every update's norm (the same bytes as the
    second: whole reads are kept, range reads pinned to the blob version) and drops those above k × the
    round's median before the strategy's pass.
    """
    job, spec = order.job, order.job.spec
    record_path = layout.aggregate_record(job.run_id, job.round)
    strategy = spec.strategy.build()
    with ThreadPoolExecutor(5) as pool:  # independent reads, one round trip
        done, manifest_doc, global_arrays, side, state = (
            pool.submit(store.get_json, layout.RUNS, record_path),
            pool.submit(store.get_json, layout.RUNS, job.manifest), pool.submit(load_global, store, job.model),
            pool.submit(silo_side, store, job.run_id), pool.submit(load_state, store, job.model, strategy))
    if done.result() is not None:
        return AggregateResult.model_validate(done.result())
    manifest_doc, global_arrays, side = manifest_doc.result(), global_arrays.result(), side.result()
    max_bytes = int(spec.max_update_mb * 2**20)
    bound = job.update_bound or resolve_bound(spec.max_update_norm, side.clip_norm, global_arrays)
    caps = manifest_doc.get("sample_caps") or {}
    try:
        state = state.result()
    except StateError as e:
        return AggregateResult(error=f"strategy state: {e}", update_bound=bound)
    rejected: dict[str, str] = {}
    received: dict[str, Received] = {}
    capped: dict[str, SampleCap] = {}
    sources: list[BlockUpdate] = []
    whole_read_bytes = whole_read_budget // max(1, len(order.updates))

    def open_one(silo: str, notice: UpdateNotice) -> tuple[BlobRange, Opened]:
        expected = {"run": job.run_id, "round": job.round, "silo": silo, "nonce": job.nonce,
                    "silos": manifest_doc["silos"]}
        blob = open_outbox(silo, notice.path)
        return blob, open_update(blob, silo, global_arrays, expected=expected, max_bytes=max_bytes,
                                 whole_read_bytes=whole_read_bytes, side=side)

    def metrics_of(silo: str, notice: UpdateNotice) -> dict:
        return check_metrics(read_outbox(silo, notice.path.removesuffix(layout.UPDATE) + layout.METRICS,
                                         MAX_METRICS_BYTES))

    openings, metrics_read = each_silo(order.updates, open_one, metrics_of)  # side by side: one round trip
    for silo, notice in sorted(order.updates.items()):
        try:
            (blob, opened), metrics = openings[silo].result(), metrics_read[silo].result()
        except UnreadableUpdate as e:
            rejected[silo] = f"unreadable: {e.error}"
            continue
        except (weights.UpdateRejected, Refused, AzureError, ValueError) as e:
            rejected[silo] = str(e)
            continue
        source = opened.source
        cap = sample_cap(silo, source.num_samples, caps.get(silo), spec.max_samples_per_silo)
        if cap is not None:
            capped[silo] = cap
            source = Reweighted(source, cap.used)
        sources.append(source)
        received[silo] = Received(path=notice.path, sha256=opened.sha256,
                                  version=None if opened.sha256 else blob.version, metrics=metrics,
                                  payload=opened.kind, transforms=[s.wire() for s in opened.history],
                                  clipped=pipeline.clipped(opened.history), times=opened.times)
    readers = RANGE_READERS if any(r.version for r in received.values()) else 0

    def result(**fields) -> AggregateResult:
        return AggregateResult(rejected=[Rejection(silo=s, reason=r) for s, r in sorted(rejected.items())],
                               capped={s: c for s, c in capped.items() if s in fields.get("accepted", ())},
                               update_bound=bound, **fields)

    def refuse(failed: dict[str, Exception]) -> None:
        for silo, e in failed.items():
            rejected[silo] = f"{e} — {bound.describe()}" if getattr(e, "rule", None) == "norm" else str(e)

    measured: dict[str, float] = {}
    if spec.max_update_norm_vs_median is not None and sources:
        sources, measured, failed = within_median(global_arrays, sources, bound.max_norm,
                                                  spec.max_update_norm_vs_median, readers)
        refuse(failed)
    while True:
        if len(sources) < manifest_doc["needed"]:
            return result(accepted=sorted(u.key for u in sources))
        try:
            agg = strategy.aggregate_round(global_arrays, sources, state, max_norm=bound.max_norm, readers=readers)
            break
        except TooFewUpdates as e:  # too few for the rule; below quorum (with the reasons) if the value rules did it
            refuse(e.rejected)
            kept = sorted(u.key for u in sources if u.key not in e.rejected)
            return result(accepted=kept) if len(kept) < manifest_doc["needed"] else result(accepted=kept, error=str(e))
        except UnreadableUpdate as e:
            rejected[e.silo] = f"unreadable: {e.error}"
            sources = [u for u in sources if u.key != e.silo]
    refuse(agg.rejected)
    norms = {**agg.norms, **measured}
    samples = {u.key: u.num_samples for u in sources if u.key in agg.accepted}
    fields = dict(accepted=agg.accepted, selected=agg.selected, samples=samples, num_samples=sum(samples.values()),
                  received={s: received[s].model_copy(update={"norm": norms.get(s)}) for s in agg.accepted})
    if len(agg.accepted) < manifest_doc["needed"]:
        return result(**fields)
    path, state_path = layout.global_model(job.run_id, job.round + 1), layout.strategy_state(job.run_id, job.round + 1)
    data = weights.encode(agg.arrays, {"run": job.run_id, "round": str(job.round + 1)})
    state_data = encode_state(agg.state, strategy.describe())
    with ThreadPoolExecutor(2) as pool:  # both before the record that commits them
        list(pool.map(store.put_bytes, (layout.MODELS, layout.RUNS), (path, state_path), (data, state_data)))
    _keep_model(weights.sha256(data), agg.arrays)
    committed = result(**fields, model=model_ref(path, data, state_path, state_data))
    if not store.create_once(layout.RUNS, record_path, to_json(committed.wire())):
        return AggregateResult.model_validate(store.get_json(layout.RUNS, record_path))
    return committed


def within_median(global_arrays: dict, sources: list[BlockUpdate], max_norm: float, multiple: float,
                  readers: int) -> tuple[list[BlockUpdate], dict[str, float], dict[str, Exception | str]]:
    """The round's updates within ``multiple`` × the lower median of their norms (rule ``norm.median``),
    their ‖update − global‖₂, and why each other one failed. One block pass measures every update and
    applies the value rules; the kept ones are then read as checked (the same bytes: held in memory, or
    range reads pinned to the version opened)."""
    failed: dict[str, Exception | str] = {}
    while True:
        ordered = in_key_order(sources)
        blocks = BlockPass(global_arrays, ordered, block_for(len(ordered)), max_norm, measure_all=True, readers=readers)
        try:
            for _ in blocks():
                pass
            break
        except UnreadableUpdate as e:
            failed[e.silo] = f"unreadable: {e.error}"
            sources = [u for u in sources if u.key != e.silo]
    failed.update(blocks.failures())
    norms = {k: math.sqrt(v) for k, v in blocks.sq_distances().items() if k not in failed}
    failed.update(above_median(norms, multiple))
    kept = [CheckedUpdate(u) for u in ordered if u.key not in failed]
    return kept, {u.key: norms[u.key] for u in kept}, failed


def each_silo(items: Mapping[str, T], *reads: Callable[[str, T], R]) -> list[dict[str, Future[R]]]:
    """Each ``read(silo, item)`` for every silo, ``OUTBOX_READERS`` at a time; one dict of futures per
    read, each holding its result or its error, so one silo's failure is that silo's alone."""
    futures: list[dict[str, Future[R]]] = [{} for _ in reads]
    with ThreadPoolExecutor(max(1, min(OUTBOX_READERS, len(items) * len(reads)))) as pool:
        for silo, item in items.items():
            for read, out in zip(reads, futures):
                out[silo] = pool.submit(read, silo, item)
    return futures


def sample_cap(silo: str, reported: int, registered: int | None, spec_cap: int | None) -> SampleCap | None:
    """How many samples a silo's update is weighted by, if less than it reported: the orchestrator cannot
    count a silo's data, so it caps the silo's claim by what was registered for it and by the spec."""
    limits = [(c, by) for c, by in ((registered, "the silo's registered max_samples"),
                                    (spec_cap, "the spec's max_samples_per_silo")) if c is not None and c < reported]
    if not limits:
        return None
    used, by = min(limits)
    return SampleCap(reported=reported, used=used, by=by)


def pool_evaluations(store: RunStore, read_outbox: OutboxReader, order: EvaluationOrder) -> RoundEvaluation:
    """Read and check each job's evaluation of the model that entered the round; pool the silos' figures
    and, apart, the evaluators'. Recorded per round (``evaluation.json``, with the pooled confusion
    matrices and whose figures were asked for); a re-run returns the record.

    The round pools while it aggregates, over every silo that answered; if aggregation then rejects some
    of them, it orders the pooling again without them, and that narrower order replaces the record. An
    order over more silos than the record's (a late duplicate of the first) never replaces it."""
    job = order.job
    record_path = layout.round_evaluation(job.run_id, job.round)
    asked = {"silos": sorted(order.silos), "evaluators": sorted(order.evaluators)}
    with ThreadPoolExecutor(2) as pool:  # independent reads, one round trip
        done = pool.submit(store.get_json, layout.RUNS, record_path)
        manifest = pool.submit(run_manifest, store, job.run_id)
    done = done.result()
    if done is not None and not _narrower(asked, done.get("asked", asked)):
        return RoundEvaluation.model_validate({k: done[k] for k in RoundEvaluation.model_fields})
    classes = manifest.result().num_classes
    rejected: list[Rejection] = []
    figures: dict[str, evaluation.EvalFigures] = {}

    def read_one(silo: str, _) -> evaluation.EvalFigures:
        path = layout.outbox_prefix(job.run_id, job.round, silo) + layout.EVALUATION
        expected = {"run": job.run_id, "round": job.round, "silo": silo, "nonce": job.nonce}
        return evaluation.check_evaluation(read_outbox(silo, path, evaluation.max_bytes(classes)),
                                           num_classes=classes, expected=expected)

    [reads] = each_silo(dict.fromkeys({*order.silos, *order.evaluators}), read_one)
    for silo in sorted(reads):
        try:
            figures[silo] = reads[silo].result()
        except (weights.UpdateRejected, AzureError, ValueError) as e:
            rejected.append(Rejection(silo=silo, reason=f"evaluation: {e}"))
    pooled = evaluation.pool((figures[s] for s in order.silos if s in figures), classes)
    heldout = evaluation.pool((figures[s] for s in order.evaluators if s in figures), classes)
    result = RoundEvaluation(metrics={**pooled.summary(), **heldout.summary("heldout_")},
                             evaluated=sorted(figures), rejected=rejected)
    record = to_json({**result.wire(), "asked": asked, "confusion": pooled.confusion.tolist(),
                      "heldout_confusion": heldout.confusion.tolist()})
    if done is not None:
        store.put_bytes(layout.RUNS, record_path, record)
    elif not store.create_once(layout.RUNS, record_path, record):
        done = store.get_json(layout.RUNS, record_path)
        return RoundEvaluation.model_validate({k: done[k] for k in RoundEvaluation.model_fields})
    return result


def _narrower(asked: dict[str, list[str]], recorded: dict[str, list[str]]) -> bool:
    """Whether an order asks for a strict subset of what a recorded pooling asked for."""
    return asked != recorded and all(set(asked[k]) <= set(recorded[k]) for k in ("silos", "evaluators"))


def final_evaluation(store: RunStore, state: RunState) -> dict | None:
    """The pooled evaluation record (with confusion matrices) of the run's final model, if it was evaluated:
    the model entering the round after the last one adopted."""
    rounds_done = len(state.rounds)
    return store.get_json(layout.RUNS, layout.round_evaluation(state.run_id, rounds_done))


def keep_round_result(store: RunStore, run_id: str, result: RoundResult) -> None:
    """Add a completed round to the run's round record; a replay rewrites the same entry. One writer per
    run: the run's own ``observe`` activity, which the run awaits before its next round."""
    path = layout.round_results(run_id)
    kept = [r for r in (store.get_json(layout.RUNS, path) or {"rounds": []})["rounds"] if r["round"] != result.round]
    store.put_json(layout.RUNS, path, {"rounds": sorted([*kept, result.wire()], key=lambda r: r["round"])})


def round_results(store: RunStore, run_id: str) -> list[dict]:
    """The run's completed rounds, oldest first (``RoundResult`` JSON)."""
    return (store.get_json(layout.RUNS, layout.round_results(run_id)) or {"rounds": []})["rounds"]
