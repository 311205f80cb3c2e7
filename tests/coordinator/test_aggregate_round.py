"""The aggregate activity's logic against real storage: every bad update is rejected with its reason,
the quorum is checked before anything is written, a re-run returns the first result, the strategy's
state goes from round to round through its blob, and large updates are read by pinned range reads."""
from __future__ import annotations

import json
import math
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


def make_job(store, run, silos=SILOS, **spec_fields):
    spec = RunSpec(task="digits", silos=list(silos), **{"quorum": 0.6, **spec_fields})
    model = rounds.init_run(store, RunState(run_id=run, spec=spec))
    job = RoundJob(run_id=run, round=0, nonce="n0", model=model, spec=spec, deadline="2030-01-01T00:00:00+00:00")
    plan = rounds.prepare_round(store, list(silos), job)
    return job.model_copy(update={"manifest": plan.manifest})


@pytest.fixture
def job(store, request):
    return make_job(store, f"agg-{request.node.name[-40:].replace('_', '-')}")


def next_round(store, job, result):
    """The job of the round after ``job``, from the model its aggregation recorded."""
    nxt = job.model_copy(update={"round": job.round + 1, "nonce": f"n{job.round + 1}",
                                 "model": ModelRef.model_validate(result["model"])})
    return nxt.model_copy(update={"manifest": rounds.prepare_round(store, SILOS, nxt).manifest})


def update_bytes(job, store, silo, *, scale=1.0, n=100, **meta_over):
    arrays = rounds.load_global(store, job.model)
    arrays = {k: (v * scale).astype(v.dtype) for k, v in arrays.items()}
    meta = {"run": job.run_id, "round": str(job.round), "silo": silo, "nonce": job.nonce, "num_samples": str(n),
            **meta_over}
    return weights.encode(arrays, meta)


def wrong_shape(job, store):
    arrays = rounds.load_global(store, job.model)
    name = next(iter(arrays))
    arrays[name] = np.zeros(arrays[name].size + 1, arrays[name].dtype)
    return weights.encode(arrays, {"run": job.run_id, "round": "0", "silo": "c-silo", "nonce": "n0",
                                   "num_samples": "5"})


METRICS = json.dumps({"loss": 0.5, "num_samples": 100}).encode()


class MemoryBlob:
    """A ``BlobRange`` over bytes, counting its reads."""

    def __init__(self, data: bytes):
        self.data, self.size, self.version, self.reads = data, len(data), "v1", 0

    def read(self, offset, length):
        self.reads += 1
        return self.data[offset:offset + length]


def aggregate(store, job, blobs: dict[str, bytes], metrics: dict[str, bytes] | None = None, opener=None, **kw):
    def read(silo, path, max_bytes):
        assert path.endswith(layout.METRICS), "updates are opened, not read whole through the reader"
        return (metrics or {}).get(silo, METRICS)
    order = AggregateOrder(job=job, updates={s: UpdateNotice(path=f"{s}/{layout.UPDATE}") for s in blobs})
    return rounds.aggregate_round(store, read, opener or (lambda silo, path: MemoryBlob(blobs[silo])), order,
                                  **kw).wire()


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


def test_strategy_state_goes_from_round_to_round_through_its_blob(store):
    """FedAdam over two rounds: each round reads the state its model reference pins and writes the next,
    and the chain is bit-identical to the same rounds aggregated in process."""
    from fedfunc.aggregation import MemoryUpdate, decode_state, encode_state

    job = make_job(store, "agg-state-chain", strategy={"name": "fedadam", "options": {"eta": 0.05}})
    strategy = job.spec.strategy.build()
    g = rounds.load_global(store, job.model)
    state = strategy.initial_state(g)
    for r in range(2):
        blobs = {s: update_bytes(job, store, s, scale=1.0 + 0.1 * i + r, n=50 + i) for i, s in enumerate(SILOS)}
        result = aggregate(store, job, blobs)
        ref = ModelRef.model_validate(result["model"])
        assert ref.state_path == layout.strategy_state(job.run_id, r + 1)
        expected = strategy.aggregate_round(g, [MemoryUpdate(s, 50 + i, weights.decode(blobs[s])[0])
                                                for i, s in enumerate(SILOS)], state)
        stored_state = store.get_bytes(layout.RUNS, ref.state_path)
        assert stored_state == encode_state(expected.state, strategy.describe())
        assert decode_state(stored_state, strategy.describe()).scalars == {"step": r + 1}
        assert weights.decode(store.get_bytes(layout.MODELS, ref.path))[0].keys() == expected.arrays.keys()
        for k, v in weights.decode(store.get_bytes(layout.MODELS, ref.path))[0].items():
            np.testing.assert_array_equal(v, expected.arrays[k])
        g, state, job = expected.arrays, expected.state, next_round(store, job, result)


@pytest.mark.parametrize("damage, named", [("delete", "missing"), ("garbage", "sha256"), ("other", "sha256")])
def test_missing_or_altered_state_fails_the_round_clearly_and_writes_nothing(store, damage, named):
    from fedfunc.aggregation import State, encode_state

    job = make_job(store, f"agg-state-{damage}", strategy="fedyogi")
    container = store.container(layout.RUNS)
    if damage == "delete":
        container.delete_blob(job.model.state_path)
    else:
        data = b"not a state" if damage == "garbage" else encode_state(State({}, {"step": 7}), {"name": "fedyogi"})
        store.put_bytes(layout.RUNS, job.model.state_path, data)
    result = aggregate(store, job, {s: update_bytes(job, store, s) for s in SILOS})
    assert result["model"] is None and result["error"].startswith("strategy state: ") and named in result["error"]
    assert store.get_bytes(layout.MODELS, layout.global_model(job.run_id, 1)) is None
    assert store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0)) is None


@pytest.mark.parametrize("strategy, blobs_of, message", [
    ({"name": "krum", "options": {"f": 1}}, lambda job, store: {s: update_bytes(job, store, s) for s in SILOS},
     "krum needs at least 5 updates (f=1 Byzantine updates need n ≥ 2f + 3); got 3"),
    ("median", lambda job, store: {"a-silo": update_bytes(job, store, "a-silo"),
                                   "b-silo": update_bytes(job, store, "b-silo"),
                                   "c-silo": update_bytes(job, store, "c-silo", scale=float("inf"))},
     "median needs at least 3 updates (the median of fewer than 3 values outvotes none); got 2"),
])
def test_a_robust_rule_with_too_few_updates_fails_the_round_naming_rule_and_count(store, strategy, blobs_of, message):
    job = make_job(store, f"agg-few-{strategy if isinstance(strategy, str) else strategy['name']}", strategy=strategy)
    result = aggregate(store, job, blobs_of(job, store))
    assert result["model"] is None and result["error"] == message
    assert store.get_bytes(layout.MODELS, layout.global_model(job.run_id, 1)) is None
    assert store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0)) is None


def test_krum_records_which_updates_it_kept(store):
    silos = {f"s{i}": 1.0 + 0.01 * i for i in range(4)} | {"s9": 50.0}
    job = make_job(store, "agg-krum-kept", sorted(silos), strategy={"name": "krum", "options": {"f": 1, "m": 2}})
    result = aggregate(store, job, {s: update_bytes(job, store, s, scale=k) for s, k in silos.items()})
    assert result["accepted"] == sorted(silos) and result["selected"] == ["s1", "s2"]


def test_large_updates_are_read_by_range_reads_pinned_to_the_blob_version(store):
    """With no budget for whole reads, every update is read block by block from Azurite with If-Match on
    the ETag seen when it was opened: the same model bits as whole reads; an update overwritten after it
    was opened is rejected as unreadable and the others are aggregated."""
    from fedfunc.storage import PinnedBlob

    job = make_job(store, "agg-ranges", strategy="fedavgm", quorum=0.3)
    blobs = {s: update_bytes(job, store, s, scale=1.0 + i) for i, s in enumerate(SILOS)}
    container = store.container("test-outbox")
    for s, data in blobs.items():
        container.upload_blob(f"{job.run_id}/{s}", data, overwrite=True)
    reads = {"count": 0}

    class Changing(PinnedBlob):
        def read(self, offset, length):
            reads["count"] += 1
            if self._blob.blob_name.endswith("c-silo") and offset > 64:  # past the header: overwrite, then read
                container.upload_blob(f"{job.run_id}/c-silo", blobs["a-silo"], overwrite=True)
            return super().read(offset, length)

    def opener(silo, path):
        return Changing(container.get_blob_client(f"{job.run_id}/{silo}"))

    ranged = aggregate(store, job, blobs, opener=opener, whole_read_budget=0)
    assert ranged["error"] is None and ranged["accepted"] == ["a-silo", "b-silo"]
    assert [r["silo"] for r in ranged["rejected"]] == ["c-silo"]
    assert ranged["rejected"][0]["reason"].startswith("unreadable: ") and "ConditionNotMet" in \
        ranged["rejected"][0]["reason"]
    assert {s: r["sha256"] for s, r in ranged["received"].items()} == {"a-silo": None, "b-silo": None}
    assert all(r["version"] for r in ranged["received"].values())
    assert reads["count"] > 3 * len(weights.decode(blobs["a-silo"])[0])  # header + one read per tensor block

    whole = make_job(store, "agg-ranges-whole", strategy="fedavgm", quorum=0.3)
    two = {s: update_bytes(whole, store, s, scale=1.0 + i) for i, s in enumerate(SILOS[:2])}
    expected = aggregate(store, whole, two)
    assert expected["received"]["a-silo"]["sha256"] == weights.sha256(two["a-silo"])
    got = weights.decode(store.get_bytes(layout.MODELS, ModelRef.model_validate(ranged["model"]).path))[0]
    want = weights.decode(store.get_bytes(layout.MODELS, ModelRef.model_validate(expected["model"]).path))[0]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def signed_side(**side):
    """A spec's bundle as far as the coordinator reads it (the edge verified its signature)."""
    return {"bundle": {"config": {"hyperparams": {}, **side}}}


def piped(job, store, silo, *specs, scale=1.0, n=100):
    """An update as a silo's chain makes it: trained arrays through ``specs``, history in the metadata."""
    from fedfunc.pipeline import TransformSpec, Update, chain, to_metadata

    g = rounds.load_global(store, job.model)
    update = Update({k: (v * scale).astype(v.dtype) for k, v in g.items()}, g)
    for t in chain([], [TransformSpec.model_validate(s) for s in specs]):
        update = t(update)
    meta = {"run": job.run_id, "round": str(job.round), "silo": silo, "nonce": job.nonce, "num_samples": str(n),
            **to_metadata(update)}
    return weights.encode(update.arrays, meta)


def test_updates_are_checked_against_the_signed_transforms_and_delta_payloads_aggregated(store):
    clip = {"name": "clip", "options": {"max_norm": 5.0}}
    job = make_job(store, "agg-transforms", bundle=signed_side(transforms=[{"name": "delta"}, clip]))
    g = rounds.load_global(store, job.model)
    blobs = {"a-silo": piped(job, store, "a-silo", {"name": "delta"}, clip, scale=4.0),
             "b-silo": piped(job, store, "b-silo", {"name": "delta"}, clip, scale=1.001),
             "c-silo": piped(job, store, "c-silo", {"name": "delta"}, scale=1.001)}
    result = aggregate(store, job, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"]
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and rejected["reason"].startswith(
        "transforms.missing: the signed bundle requires [delta, clip(max_norm=5.0)] last, in order; "
        "the update's history is [delta]")
    assert {s: (r["payload"], r["clipped"]) for s, r in result["received"].items()} == {
        "a-silo": ("delta", True), "b-silo": ("delta", False)}
    new = rounds.load_global(store, ModelRef.model_validate(result["model"]))
    distance = math.sqrt(sum(float(np.sum((new[k].astype(np.float64) - g[k]) ** 2)) for k in g))
    assert distance <= 5.0  # the mean of two updates within 5 of the global model


def test_fedprox_updates_must_show_the_signed_proximal_term(store):
    job = make_job(store, "agg-fedprox", strategy="fedprox", bundle=signed_side(proximal_mu=0.01))
    plain = update_bytes(job, store, "a-silo")
    arrays, meta = weights.decode(update_bytes(job, store, "b-silo"))
    trained = weights.encode(arrays, {**meta, "transforms": json.dumps([{"name": "proximal", "options": {"mu": 0.01}}])})
    result = aggregate(store, job, {"a-silo": plain, "b-silo": trained, "c-silo": trained.replace(b"b-silo", b"c-silo")})
    assert result["accepted"] == ["b-silo", "c-silo"]
    assert result["rejected"][0]["reason"] == ("transforms.missing: the signed bundle requires proximal(mu=0.01) in "
                                               "training; the update's history is []")
