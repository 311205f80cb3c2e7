"""The aggregate activity's logic against real storage: every bad update is rejected with its reason,
the quorum is checked before anything is written, and a re-run returns the first result."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fedfunc import layout, weights
from fedfunc.contracts import ModelRef
from fedfunc.coordinator import rounds
from fedfunc.coordinator.store import RunStore
from fedfunc.protocol import AggregateOrder, RoundJob, RunState, UpdateNotice
from fedfunc.spec import RunSpec
from fedfunc.storage import blob_service

SILOS = ["a-silo", "b-silo", "c-silo"]


@pytest.fixture
def store(azurite, request):
    svc = blob_service(azurite.orchestrator.connection_string)
    yield RunStore(svc)


@pytest.fixture
def job(store, request):
    run = f"agg-{request.node.name[-40:].replace('_', '-')}"
    spec = RunSpec(task="digits", silos=SILOS, quorum=0.6)
    model = rounds.init_run(store, RunState(run_id=run, spec=spec))
    job = RoundJob(run_id=run, round=0, nonce="n0", model=model, spec=spec, deadline="2030-01-01T00:00:00+00:00")
    plan = rounds.prepare_round(store, SILOS, job)
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
