"""The aggregate and pool_evaluations activities' logic against real storage: every bad update or
evaluation is rejected with its reason, the quorum is checked before anything is written, a re-run
returns the first result, and round 0's model is the bundle's signed initial weights."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fedfunc import layout, weights
from fedfunc.contracts import ModelRef
from fedfunc.coordinator import rounds
from fedfunc.coordinator.bundles import UnknownBundle, store_bundle
from fedfunc.coordinator.store import RunStore
from fedfunc.evaluation import EvalFigures
from fedfunc.protocol import AggregateOrder, EvaluationOrder, RoundJob, RunState, UpdateNotice
from fedfunc.security import keys
from fedfunc.security.bundle import open_bundle
from fedfunc.spec import RunSpec
from fedfunc.storage import blob_service
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.signing import build_bundle

SILOS = ["a-silo", "b-silo", "c-silo"]


@pytest.fixture(scope="session")
def digits_bundle() -> bytes:
    return build_bundle(task_dir("digits"), keys.generate())


@pytest.fixture
def store(azurite, request):
    svc = blob_service(azurite.orchestrator.connection_string)
    yield RunStore(svc)


@pytest.fixture
def job(store, request, digits_bundle):
    run = f"agg-{request.node.name[-40:].replace('_', '-')}"
    bundle, _ = store_bundle(store, digits_bundle, len(digits_bundle))
    spec = RunSpec(task="digits", bundle=bundle.code_hash, silos=SILOS, evaluators=["held-out"], quorum=0.6)
    model = rounds.init_run(store, RunState(run_id=run, spec=spec))
    job = RoundJob(run_id=run, round=0, nonce="n0", model=model, spec=spec, deadline="2030-01-01T00:00:00+00:00")
    plan = rounds.prepare_round(store, [*SILOS, "held-out"], job)
    assert plan.silos == SILOS and plan.evaluators == ["held-out"]
    return job.model_copy(update={"manifest": plan.manifest})


def update_bytes(job, store, silo, *, scale=1.0, n=100, **meta_over):
    arrays = rounds.load_global(store, job.model)
    arrays = {k: (v * scale).astype(v.dtype) for k, v in arrays.items()}
    meta = {"run": job.run_id, "round": "0", "silo": silo, "nonce": job.nonce, "num_samples": str(n), **meta_over}
    return weights.encode(arrays, meta)


def wrong_shape(job, store):
    arrays = rounds.load_global(store, job.model)
    name = next(iter(arrays))
    arrays[name] = np.zeros(arrays[name].size + 1, arrays[name].dtype)
    return weights.encode(arrays, {"run": job.run_id, "round": "0", "silo": "c-silo", "nonce": "n0",
                                   "num_samples": "5"})


METRICS = json.dumps({"loss": 0.5, "num_samples": 100}).encode()


def aggregate(store, job, blobs: dict[str, bytes], metrics: dict[str, bytes] | None = None):
    def read(silo, path, max_bytes):
        if path.endswith(layout.METRICS):
            return (metrics or {}).get(silo, METRICS)
        return blobs[silo]
    order = AggregateOrder(job=job, updates={s: UpdateNotice(path=f"{s}/{layout.UPDATE}") for s in blobs})
    return rounds.aggregate_round(store, read, order).wire()


def test_weighted_average_of_valid_updates(store, job):
    blobs = {"a-silo": update_bytes(job, store, "a-silo", scale=1.0, n=100),
             "b-silo": update_bytes(job, store, "b-silo", scale=3.0, n=300)}
    result = aggregate(store, job, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"] and result["rejected"] == []
    assert result["num_samples"] == 400
    new = rounds.load_global(store, ModelRef.model_validate(result["model"]))
    old = rounds.load_global(store, job.model)
    for k in old:
        np.testing.assert_allclose(new[k], old[k] * 2.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad, reason", [
    (lambda job, store: pickle.dumps({"w": np.zeros(3)}), "safetensors"),
    (lambda job, store: update_bytes(job, store, "c-silo", scale=float("nan")), "finite"),
    (lambda job, store: update_bytes(job, store, "c-silo", round="1"), "round"),
    (lambda job, store: update_bytes(job, store, "c-silo", nonce="stale"), "nonce"),
    (lambda job, store: update_bytes(job, store, "a-silo"), "silo"),
    (lambda job, store: weights.encode({"w": np.zeros((2, 2), np.float32)}, {
        "run": job.run_id, "round": "0", "silo": "c-silo", "nonce": "n0", "num_samples": "5"}), "missing_tensor"),
    (lambda job, store: wrong_shape(job, store), "shape"),
    (lambda job, store: update_bytes(job, store, "c-silo") + b"\0" * (300 * 2**20), "size"),
])
def test_bad_update_is_rejected_with_reason_and_round_goes_on(store, job, bad, reason):
    blobs = {"a-silo": update_bytes(job, store, "a-silo"), "b-silo": update_bytes(job, store, "b-silo"),
             "c-silo": bad(job, store)}
    result = aggregate(store, job, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"]
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and reason in rejected["reason"], rejected


def test_below_quorum_writes_nothing(store, job):
    blobs = {"a-silo": update_bytes(job, store, "a-silo"), "b-silo": b"not an update"}
    result = aggregate(store, job, blobs)
    assert result["model"] is None and result["accepted"] == ["a-silo"]
    assert store.get_bytes(layout.MODELS, layout.global_model(job.run_id, 1)) is None
    assert store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0)) is None


def test_rerun_returns_the_first_result(store, job):
    first = aggregate(store, job, {s: update_bytes(job, store, s) for s in SILOS})
    again = aggregate(store, job, {s: update_bytes(job, store, s, scale=5.0) for s in SILOS})
    assert again == first
    record = store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0))
    assert json.dumps(record, sort_keys=True) == json.dumps(first, sort_keys=True)


def test_metrics_that_are_not_plain_numbers_reject_the_update(store, job):
    blobs = {s: update_bytes(job, store, s) for s in SILOS}
    result = aggregate(store, job, blobs, metrics={"c-silo": json.dumps({"loss": "secret patient list"}).encode()})
    assert result["accepted"] == ["a-silo", "b-silo"]
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and "egress.metrics_schema" in rejected["reason"]


def test_received_updates_are_recorded_with_their_hash(store, job):
    blobs = {s: update_bytes(job, store, s) for s in SILOS}
    result = aggregate(store, job, blobs)
    assert {s: r["sha256"] for s, r in result["received"].items()} == {s: weights.sha256(b) for s, b in blobs.items()}


def test_round_0_is_the_bundles_signed_initial_weights(store, job, digits_bundle):
    signed, _ = weights.decode(open_bundle(digits_bundle).weights())
    for k, v in rounds.load_global(store, job.model).items():
        np.testing.assert_array_equal(v, signed[k])
    assert rounds.run_manifest(store, job.run_id).num_classes == 10
    with pytest.raises(UnknownBundle, match="no bundle"):
        rounds.init_run(store, RunState(run_id="agg-nobundle", spec=RunSpec(bundle="0" * 64, silos=SILOS)))


def evaluation_bytes(job, silo, figures: EvalFigures, **meta_over) -> bytes:
    return figures.encode({"run": job.run_id, "round": "0", "silo": silo, "nonce": job.nonce, **meta_over})


def confusion(correct: int, wrong: int) -> np.ndarray:
    c = np.zeros((10, 10), np.int64)
    c[0, 0], c[1, 2] = correct, wrong
    return c


def test_evaluations_pool_exactly_with_the_held_out_evaluator_apart(store, job):
    blobs = {"a-silo": evaluation_bytes(job, "a-silo", EvalFigures(10, 5.0, confusion(9, 1))),
             "b-silo": evaluation_bytes(job, "b-silo", EvalFigures(30, 3.0, confusion(15, 15))),
             "c-silo": evaluation_bytes(job, "c-silo", EvalFigures(5, 1.0, confusion(5, 0)), nonce="stale"),
             "held-out": evaluation_bytes(job, "held-out", EvalFigures(4, 2.0, confusion(4, 0)))}
    order = EvaluationOrder(job=job, silos=SILOS, evaluators=["held-out"])
    result = rounds.pool_evaluations(store, lambda silo, path, n: blobs[silo], order)
    assert result.metrics == {"accuracy": 24 / 40, "loss": 8.0 / 40, "num_examples": 40,
                              "heldout_accuracy": 1.0, "heldout_loss": 0.5, "heldout_num_examples": 4}
    assert [(r.silo, "nonce" in r.reason) for r in result.rejected] == [("c-silo", True)]
    record = json.loads(store.get_bytes(layout.RUNS, layout.round_evaluation(job.run_id, 0)))
    assert np.array(record["confusion"]).sum() == 40 and np.array(record["heldout_confusion"]).sum() == 4
    again = rounds.pool_evaluations(store, lambda *a: pytest.fail("a re-run must not read again"), order)
    assert again == result
