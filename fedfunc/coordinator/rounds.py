"""Orchestrator-side steps of a run: initial model, round manifest, silo job requests, aggregation, pooled
evaluation. Tensors and figures only: no task code is imported here (the model's round-0 weights come
from the signed bundle, every evaluation from the silos)."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from azure.core.exceptions import AzureError

from fedfunc import evaluation, layout, weights
from fedfunc.aggregation import get_strategy
from fedfunc.contracts import JobMode, ModelRef, OutboxReader, SiloJobBackend, SiloJobRequest
from fedfunc.coordinator.bundles import open_stored
from fedfunc.coordinator.store import RunStore, to_json
from fedfunc.protocol import (AggregateOrder, AggregateResult, EvaluationOrder, Received, Rejection, RoundEvaluation,
                              RoundJob, RoundPlan, RunStart, RunState, SampleCap, SiloJobStarted)
from fedfunc.security import Refused
from fedfunc.security.bundle import BundleManifest
from fedfunc.security.egress import MAX_METRICS_BYTES, check_metrics
from fedfunc.security.update_bound import above_median, resolve_bound


def model_ref(path: str, data: bytes) -> ModelRef:
    return ModelRef(path=path, sha256=weights.sha256(data))


def init_run(store: RunStore, state: RunState) -> RunStart:
    """Write the spec, a copy of the bundle's manifest and the round-0 global model — the bundle's signed
    initial weights (once: a retry finds and returns the first one) — and fix the run's bound on updates
    from the bundle, the spec or that model."""
    run_id, spec = state.run_id, state.spec
    path = layout.global_model(run_id, 0)
    if store.get_bytes(layout.MODELS, path) is None:
        opened = open_stored(store, spec.bundle)
        arrays, _ = weights.decode(opened.weights())
        store.put_json(layout.RUNS, layout.run_bundle_manifest(run_id), opened.manifest.model_dump(mode="json"))
        store.create_once(layout.MODELS, path, weights.encode(arrays, {"run": run_id, "round": "0"}))
    store.put_json(layout.RUNS, layout.run_spec(run_id), spec.model_dump(mode="json"))
    data = store.get_bytes(layout.MODELS, path)
    bound = resolve_bound(spec.max_update_norm, run_manifest(store, run_id).config, weights.decode(data)[0])
    return RunStart(model=model_ref(path, data), update_bound=bound)


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
    existing = store.get_json(layout.RUNS, path)
    if existing and existing["nonce"] == job.nonce:
        return RoundPlan(silos=existing["silos"], evaluators=existing.get("evaluators", []), manifest=path)
    wanted = [s for s in sorted(ready_silos) if s not in spec.evaluators] if spec.silos == "all" else spec.silos
    silos = [s for s in wanted if s in ready_silos]
    evaluators = [s for s in spec.evaluators if s in ready_silos]
    excluded = {s: "not ready (disabled, onboarding or removed)"
                for s in [*wanted, *spec.evaluators] if s not in ready_silos}
    store.put_json(layout.RUNS, path, {
        "run": job.run_id, "round": job.round, "nonce": job.nonce, "model": job.model.wire(),
        "deadline": job.deadline.isoformat() if job.deadline else None, "silos": silos, "evaluators": evaluators,
        "excluded": excluded, "evaluate_only": job.evaluate_only,
        "needed": 0 if job.evaluate_only else spec.needed(len(silos)),
        "sample_caps": {s: c for s, c in sorted((sample_caps or {}).items()) if s in silos},
        "update_bound": job.update_bound.wire() if job.update_bound else None,
    })
    return RoundPlan(silos=silos, evaluators=evaluators, manifest=path)


def silo_job_request(store: RunStore, job: RoundJob, silo: str, mode: JobMode, ticket: str | None) -> SiloJobRequest:
    return SiloJobRequest(
        run_id=job.run_id, round=job.round, silo=silo, nonce=job.nonce, task=job.spec.task, mode=mode,
        model_url=store.model_read_url(job.model.path), model_sha256=job.model.sha256,
        outbox_prefix=layout.outbox_prefix(job.run_id, job.round, silo), ticket=ticket, bundle=job.spec.bundle)


def start_silo_job(backend: SiloJobBackend, request: SiloJobRequest) -> SiloJobStarted:
    """Submit; a submission error makes the silo fail this round (with the backend's message), not the round."""
    try:
        return SiloJobStarted(silo=request.silo, job_id=backend.submit(request))
    except Exception as e:  # any backend error: the round goes on at quorum
        return SiloJobStarted(silo=request.silo, error=f"job submission failed: {type(e).__name__}: {e}")


def load_global(store: RunStore, ref: ModelRef) -> dict:
    data = store.get_bytes(layout.MODELS, ref.path)
    if data is None:
        raise FileNotFoundError(f"global model {ref.path} is missing from {layout.MODELS}")
    if weights.sha256(data) != ref.sha256:
        raise ValueError(f"global model {ref.path} does not match its recorded sha256")
    arrays, _ = weights.decode(data)
    return arrays


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
    done = store.get_json(layout.RUNS, record_path)
    if done is not None:
        return AggregateResult.model_validate(done)
    manifest_doc = store.get_json(layout.RUNS, job.manifest)
    global_arrays = load_global(store, job.model)
    manifest = weights.ModelManifest.from_arrays(global_arrays)
    max_bytes = int(spec.max_update_mb * 2**20)
    bound = job.update_bound or resolve_bound(
        spec.max_update_norm, run_manifest(store, job.run_id).config, global_arrays)
    caps = manifest_doc.get("sample_caps") or {}
    rejected: dict[str, Rejection] = {}
    received: dict[str, Received] = {}
    samples: dict[str, int] = {}
    capped: dict[str, SampleCap] = {}

    def check(silo: str, path: str) -> weights.ValidatedUpdate | None:
        """Read and re-check one update and its metrics; None (with the reason recorded) if rejected."""
        expected = {"run": job.run_id, "round": job.round, "silo": silo, "nonce": job.nonce,
                    "silos": manifest_doc["silos"]}
        try:
            data = read_outbox(silo, path, max_bytes)
            update = weights.validate_update(data, manifest, expected=expected, global_arrays=global_arrays,
                                             max_bytes=max_bytes, max_norm=bound.max_norm)
            metrics = check_metrics(read_outbox(silo, path.removesuffix(layout.UPDATE) + layout.METRICS,
                                                MAX_METRICS_BYTES))
            digest = weights.sha256(data)
            if silo in received and received[silo].sha256 != digest:
                raise ValueError(f"{path} changed between reads (sha256 {received[silo].sha256} then {digest})")
        except (weights.UpdateRejected, Refused, AzureError, ValueError) as e:
            why = f"{e} — {bound.describe()}" if getattr(e, "rule", None) == "norm" else str(e)
            rejected[silo] = Rejection(silo=silo, reason=why)
            received.pop(silo, None)
            return None
        received[silo] = Received(path=path, sha256=digest, metrics=metrics, norm=update.norm)
        cap = sample_cap(silo, update.num_samples, caps.get(silo), spec.max_samples_per_silo)
        if cap is not None:
            capped[silo] = cap
            update = dataclasses.replace(update, num_samples=cap.used)
        samples[silo] = update.num_samples
        return update

    candidates = sorted(order.updates.items())
    if spec.max_update_norm_vs_median is not None:
        for silo, notice in candidates:  # first pass: the round's norms, one update alive at a time
            check(silo, notice.path)
        outliers = above_median({s: r.norm for s, r in received.items()}, spec.max_update_norm_vs_median)
        rejected.update({s: Rejection(silo=s, reason=why) for s, why in outliers.items()})
        candidates = [(s, n) for s, n in candidates if s in received and s not in outliers]
        samples.clear()
        capped.clear()

    def accepted() -> Iterator[weights.ValidatedUpdate]:
        """One update alive at a time: each is dropped before the next one is downloaded."""
        for silo, notice in candidates:
            update = check(silo, notice.path)
            if update is not None:
                yield update
            update = None

    strategy = get_strategy(spec.aggregator)
    try:
        new_arrays = strategy.aggregate(global_arrays, accepted())
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


def pool_evaluations(store: RunStore, read_outbox: OutboxReader, order: EvaluationOrder) -> RoundEvaluation:
    """Read and check each job's evaluation of the model that entered the round; pool the silos' figures
    and, apart, the evaluators'. Recorded once per round (``evaluation.json``, with the pooled confusion
    matrices); a re-run returns the record."""
    job = order.job
    record_path = layout.round_evaluation(job.run_id, job.round)
    done = store.get_json(layout.RUNS, record_path)
    if done is not None:
        return RoundEvaluation.model_validate({k: done[k] for k in RoundEvaluation.model_fields})
    classes = run_manifest(store, job.run_id).num_classes
    rejected: list[Rejection] = []
    figures: dict[str, evaluation.EvalFigures] = {}
    for silo in sorted({*order.silos, *order.evaluators}):
        path = layout.outbox_prefix(job.run_id, job.round, silo) + layout.EVALUATION
        expected = {"run": job.run_id, "round": job.round, "silo": silo, "nonce": job.nonce}
        try:
            figures[silo] = evaluation.check_evaluation(read_outbox(silo, path, evaluation.max_bytes(classes)),
                                                        num_classes=classes, expected=expected)
        except (weights.UpdateRejected, AzureError, ValueError) as e:
            rejected.append(Rejection(silo=silo, reason=f"evaluation: {e}"))
    pooled = evaluation.pool((figures[s] for s in order.silos if s in figures), classes)
    heldout = evaluation.pool((figures[s] for s in order.evaluators if s in figures), classes)
    result = RoundEvaluation(metrics={**pooled.summary(), **heldout.summary("heldout_")},
                             evaluated=sorted(figures), rejected=rejected)
    record = {**result.wire(), "confusion": pooled.confusion.tolist(), "heldout_confusion": heldout.confusion.tolist()}
    if not store.create_once(layout.RUNS, record_path, to_json(record)):
        done = store.get_json(layout.RUNS, record_path)
        return RoundEvaluation.model_validate({k: done[k] for k in RoundEvaluation.model_fields})
    return result


def final_evaluation(store: RunStore, state: RunState) -> dict | None:
    """The pooled evaluation record (with confusion matrices) of the run's final model, if it was evaluated:
    the model entering the round after the last one adopted."""
    rounds_done = len(state.rounds)
    return store.get_json(layout.RUNS, layout.round_evaluation(state.run_id, rounds_done))
