"""The aggregate and pool_evaluations activities' logic against real storage: every update is read from its
silo's own outbox (through the orchestrator's outbox access in the silo registry), every bad update or
evaluation is rejected with its reason, the run's bound and sample caps apply, the quorum is checked before
anything is written, a re-run returns the first result, round 0's model is the bundle's signed initial
weights, the strategy's state goes from round to round through its blob, updates are checked against the
bundle's silo side, and large updates are read by pinned range reads."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from fedfunc import layout, weights
from fedfunc.contracts import ModelRef
from fedfunc.aggregation.sources import BytesBlob
from fedfunc.coordinator import rounds
from fedfunc.coordinator.bundles import UnknownBundle, store_bundle
from fedfunc.coordinator.services import Services
from fedfunc.evaluation import EvalFigures
from fedfunc.protocol import AggregateOrder, EvaluationOrder, RoundJob, RunState, UpdateNotice
from fedfunc.security import keys
from fedfunc.security.bundle import open_bundle
from fedfunc.security.policy import SiloPolicy
from fedfunc.settings import load_settings
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.local import provision_local_silo, release_local_silo
from fedfunc.spec import RunSpec
from fedfunc.storage import blob_service
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.signing import build_bundle

SILOS = ["a-silo", "b-silo", "c-silo"]


@pytest.fixture(scope="module")
def services(azurite, tmp_path_factory):
    """The orchestrator's services on the session's Azurite, with three real local silos in its registry."""
    conn = azurite.orchestrator.connection_string
    home = tmp_path_factory.mktemp("agg-silos")
    svc = Services(load_settings({"FEDFUNC_STORAGE": conn}))
    orchestrator_key = keys.public_b64(keys.generate().public_key())
    for silo in SILOS:
        record = provision_local_silo(silo, azurite_home=azurite.location, orchestrator_conn=conn, home_root=home,
                                      initial_policy=SiloPolicy(silo=silo, orchestrator_keys=[orchestrator_key]))
        svc.registry.put(record)
    svc.home = home
    yield svc
    for silo in SILOS:
        svc.registry.remove(silo)
        release_local_silo(silo, azurite_home=azurite.location, orchestrator_conn=conn, home_root=home)


KEY = keys.generate()


@pytest.fixture(scope="session")
def digits_bundle() -> bytes:
    """Signed without a clip, so these tests' hand-made updates need no history."""
    return build_bundle(task_dir("digits"), KEY, clip_norm="off")


@pytest.fixture
def store(services):
    return services.store


def make_job(store, run: str, silos=SILOS, bundle: bytes | None = None, sample_caps: dict | None = None,
             **spec_fields) -> RoundJob:
    """Round 0 of a run of the signed ``bundle`` (default: digits, clipping off) over ``silos`` and the
    evaluator ``held-out``, as init_run and prepare_round leave it."""
    stored, _ = store_bundle(store, bundle or build_bundle(task_dir("digits"), KEY, clip_norm="off"), 1 << 26)
    spec = RunSpec(task="digits", bundle=stored.code_hash, silos=list(silos), evaluators=["held-out"],
                   **{"quorum": 0.6, **spec_fields})
    start = rounds.init_run(store, RunState(run_id=run, spec=spec))
    job = RoundJob(run_id=run, round=0, nonce="n0", model=start.model, spec=spec, update_bound=start.update_bound,
                   deadline="2030-01-01T00:00:00+00:00")
    plan = rounds.prepare_round(store, [*silos, "held-out"], job, sample_caps=sample_caps)
    assert plan.silos == list(silos) and plan.evaluators == ["held-out"]
    return job.model_copy(update={"manifest": plan.manifest})


@pytest.fixture
def job(store, request, digits_bundle):
    return make_job(store, f"agg-{request.node.name[-40:].replace('_', '-').replace('[', '-').rstrip(']')}",
                    bundle=digits_bundle)


def next_round(store, job, result):
    """The job of the round after ``job``, from the model its aggregation recorded."""
    nxt = job.model_copy(update={"round": job.round + 1, "nonce": f"n{job.round + 1}",
                                 "model": ModelRef.model_validate(result["model"])})
    return nxt.model_copy(update={"manifest": rounds.prepare_round(store, SILOS, nxt).manifest})


def update_bytes(job, store, silo, *, scale=1.0, n=100, add=0.0, **meta_over):
    arrays = rounds.load_global(store, job.model)
    arrays = {k: (v * scale + add).astype(v.dtype) for k, v in arrays.items()}
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


def publish(services, job, silo: str, update: bytes, metrics: bytes = METRICS) -> UpdateNotice:
    """What the silo's job does: write its metrics and update to its own outbox with its own key."""
    own = blob_service(read_credentials(silo_home(services.home, silo)).connection_string)
    prefix = layout.outbox_prefix(job.run_id, job.round, silo)
    for name, data in ((layout.METRICS, metrics), (layout.UPDATE, update)):
        own.get_blob_client(layout.OUTBOX, prefix + name).upload_blob(data, overwrite=True)
    return UpdateNotice(path=prefix + layout.UPDATE, size=len(update))


def aggregate_in_memory(store, job, blobs: dict[str, bytes], metrics: dict[str, bytes] | None = None, opener=None,
                        **kw):
    """Aggregation over updates held in memory (or behind ``opener``): for reads the test counts or breaks."""
    def read(silo, path, max_bytes):
        assert path.endswith(layout.METRICS), "updates are opened, not read whole through the reader"
        return (metrics or {}).get(silo, METRICS)
    order = AggregateOrder(job=job, updates={s: UpdateNotice(path=f"{s}/{layout.UPDATE}") for s in blobs})
    return rounds.aggregate_round(store, read, opener or (lambda silo, path: BytesBlob(blobs[silo])), order,
                                  **kw).wire()


def aggregate(services, job, blobs: dict[str, bytes], metrics: dict[str, bytes] | None = None):
    updates = {s: publish(services, job, s, data, (metrics or {}).get(s, METRICS)) for s, data in blobs.items()}
    order = AggregateOrder(job=job, updates=updates)
    outboxes = services.outbox_access()
    return rounds.aggregate_round(services.store, outboxes.read, outboxes.open, order).wire()


def test_weighted_average_of_valid_updates(services, store, job):
    blobs = {"a-silo": update_bytes(job, store, "a-silo", scale=1.0, n=100),
             "b-silo": update_bytes(job, store, "b-silo", scale=3.0, n=300)}
    result = aggregate(services, job, blobs)
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
])
def test_bad_update_is_rejected_with_reason_and_round_goes_on(services, store, job, bad, reason):
    blobs = {"a-silo": update_bytes(job, store, "a-silo"), "b-silo": update_bytes(job, store, "b-silo"),
             "c-silo": bad(job, store)}
    result = aggregate(services, job, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"]
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and reason in rejected["reason"], rejected


def test_below_quorum_writes_nothing(services, store, job):
    blobs = {"a-silo": update_bytes(job, store, "a-silo"), "b-silo": b"not an update"}
    result = aggregate(services, job, blobs)
    assert result["model"] is None and result["accepted"] == ["a-silo"]
    assert store.get_bytes(layout.MODELS, layout.global_model(job.run_id, 1)) is None
    assert store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0)) is None


def test_rerun_returns_the_first_result(services, store, job):
    first = aggregate(services, job, {s: update_bytes(job, store, s) for s in SILOS})
    again = aggregate(services, job, {s: update_bytes(job, store, s, scale=5.0) for s in SILOS})
    assert again == first
    record = store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0))
    assert json.dumps(record, sort_keys=True) == json.dumps(first, sort_keys=True)


def test_metrics_that_are_not_plain_numbers_reject_the_update(services, store, job):
    blobs = {s: update_bytes(job, store, s) for s in SILOS}
    result = aggregate(services, job, blobs, metrics={"c-silo": json.dumps({"loss": "secret patient list"}).encode()})
    assert result["accepted"] == ["a-silo", "b-silo"]
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and "egress.metrics_schema" in rejected["reason"]


def test_received_updates_are_recorded_with_their_hash(services, store, job):
    blobs = {s: update_bytes(job, store, s) for s in SILOS}
    result = aggregate(services, job, blobs)
    assert {s: r["sha256"] for s, r in result["received"].items()} == {s: weights.sha256(b) for s, b in blobs.items()}


def test_without_a_bound_in_the_spec_the_default_from_the_model_rejects_a_large_constant(services, store, job):
    """No max_update_norm in the spec: the run's bound is 10 × ‖initial model‖₂, and a silo adding a
    constant to every weight is rejected with the rule, the norm, the bound and where it came from."""
    assert job.update_bound.source == "default" and "‖initial model‖₂" in job.update_bound.how
    blobs = {"a-silo": update_bytes(job, store, "a-silo", scale=1.5), "b-silo": update_bytes(job, store, "b-silo"),
             "c-silo": update_bytes(job, store, "c-silo", add=1.0)}
    result = aggregate(services, job, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"]
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and rejected["reason"].startswith("norm: ‖update − global‖₂ = 69.")
    assert f"bound {job.update_bound.max_norm:.6g} from the default" in rejected["reason"]
    assert result["update_bound"] == job.update_bound.wire()
    assert result["received"]["a-silo"]["norm"] == pytest.approx(0.5 * weights_norm(store, job), rel=1e-4)


def weights_norm(store, job) -> float:
    from fedfunc.security.update_bound import float_norm
    return float_norm(rounds.load_global(store, job.model))[0]


def test_the_spec_and_the_signed_clip_norm_bound_tighter(services, store, digits_bundle):
    spec_bound = make_job(store, "agg-spec-bound", bundle=digits_bundle, max_update_norm=1.0)
    assert spec_bound.update_bound.source == "spec" and spec_bound.update_bound.max_norm == 1.0
    blobs = {s: update_bytes(spec_bound, store, s, scale=1.5 if s == "c-silo" else 1.0) for s in SILOS}
    [rejected] = aggregate(services, spec_bound, blobs)["rejected"]
    assert rejected["silo"] == "c-silo" and "from the spec" in rejected["reason"]
    clipped = build_bundle(task_dir("digits"), KEY, clip_norm=0.5)
    signed = make_job(store, "agg-bundle-bound", bundle=clipped, max_update_norm=3.0)
    assert (signed.update_bound.source, signed.update_bound.max_norm) == ("bundle", 0.5)  # the spec cannot loosen it


def test_median_rule_rejects_what_the_absolute_bound_lets_through(services, store, digits_bundle):
    """Within the default bound, an update 6× the round's median norm passes; the spec's relative rule
    rejects it (read twice: measure, then aggregate), naming the rule, the median and the multiple."""
    honest = {s: (lambda job, s=s, k=k: update_bytes(job, store, s, scale=k)) for s, k in
              (("a-silo", 1.1), ("b-silo", 1.12))}
    plain = make_job(store, "agg-no-median", bundle=digits_bundle)
    blobs = {**{s: f(plain) for s, f in honest.items()}, "c-silo": update_bytes(plain, store, "c-silo", scale=1.6)}
    assert aggregate(services, plain, blobs)["accepted"] == SILOS
    ruled = make_job(store, "agg-median", bundle=digits_bundle, max_update_norm_vs_median=3.0)
    blobs = {**{s: f(ruled) for s, f in honest.items()}, "c-silo": update_bytes(ruled, store, "c-silo", scale=1.6)}
    result = aggregate(services, ruled, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"] and result["num_samples"] == 200
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and rejected["reason"].startswith("norm.median:")
    assert "3 × the round's median" in rejected["reason"]


def test_with_the_median_rule_each_update_is_downloaded_once_and_measured_as_aggregated(store, digits_bundle):
    """Measuring the round's norms and aggregating read the same bytes: an update read whole is downloaded
    once and kept (a range-read one is pinned to the version opened: see the range-read test)."""
    job = make_job(store, "agg-once", bundle=digits_bundle, max_update_norm_vs_median=3.0)
    blobs = {s: BytesBlob(update_bytes(job, store, s, scale=1.0 + i / 10)) for i, s in enumerate(SILOS)}
    result = aggregate_in_memory(store, job, {s: b.data for s, b in blobs.items()},
                                 opener=lambda silo, path: blobs[silo])
    assert result["accepted"] == SILOS and {b.reads for b in blobs.values()} == {1}
    assert [round(result["received"][s]["norm"] / result["received"]["b-silo"]["norm"], 6) for s in SILOS] == [0, 1, 2]


def test_num_samples_are_capped_by_the_registered_cap_and_the_spec(services, store, digits_bundle):
    """A silo claiming 10⁶ samples is weighted by its registered cap; the spec's cap binds everyone;
    the result says who was capped, from what, by what."""
    job = make_job(store, "agg-caps", bundle=digits_bundle, sample_caps={"c-silo": 50}, max_samples_per_silo=400)
    blobs = {"a-silo": update_bytes(job, store, "a-silo", n=100), "b-silo": update_bytes(job, store, "b-silo", n=1000),
             "c-silo": update_bytes(job, store, "c-silo", scale=3.0, n=10**6)}
    result = aggregate(services, job, blobs)
    assert result["samples"] == {"a-silo": 100, "b-silo": 400, "c-silo": 50} and result["num_samples"] == 550
    assert result["capped"] == {
        "b-silo": {"reported": 1000, "used": 400, "by": "the spec's max_samples_per_silo"},
        "c-silo": {"reported": 10**6, "used": 50, "by": "the silo's registered max_samples"}}
    new = rounds.load_global(store, ModelRef.model_validate(result["model"]))
    old = rounds.load_global(store, job.model)
    for k in old:  # (100·1 + 400·1 + 50·3) / 550
        np.testing.assert_allclose(new[k], old[k] * (650 / 550), rtol=1e-5, atol=1e-6)


def test_the_outbox_reader_refuses_a_blob_over_the_bound(services, store, job):
    """The orchestrator's reader, through the silo's outbox SAS: a blob one byte over the bound is an error
    naming the rule (it reads at most bound + 1 bytes); at the bound it is read whole."""
    update = update_bytes(job, store, "c-silo")
    notice = publish(services, job, "c-silo", update)
    read = services.outbox_reader()
    assert read("c-silo", notice.path, len(update)) == update
    with pytest.raises(ValueError, match=f"size: {notice.path} is over the {len(update) - 1}-byte bound"):
        read("c-silo", notice.path, len(update) - 1)


def test_updates_over_the_runs_size_bound_are_rejected_and_nothing_is_written(services, store, job):
    blobs = {s: update_bytes(job, store, s) for s in SILOS}
    small = min(len(b) for b in blobs.values()) - 1
    bounded = job.model_copy(update={"spec": job.spec.model_copy(update={"max_update_mb": small / 2**20})})
    result = aggregate(services, bounded, blobs)
    assert result["model"] is None and result["accepted"] == []
    assert {r["silo"]: r["reason"].split(":")[0] for r in result["rejected"]} == {s: "size" for s in SILOS}
    assert store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0)) is None


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


def test_a_narrower_pooling_replaces_the_record_and_a_late_wider_one_does_not(store, job):
    """The round pools while it aggregates, then again without the silos aggregation rejected: that order
    replaces the record; the first order delivered again (a duplicate activity) leaves it as it is."""
    job = job.model_copy(update={"round": 1})
    blobs = {s: EvalFigures(n, 1.0, confusion(n, 0)).encode(
        {"run": job.run_id, "round": "1", "silo": s, "nonce": job.nonce}) for s, n in zip(SILOS, (10, 20, 30))}

    def read(silo, path, n):
        return blobs[silo]

    wide = EvaluationOrder(job=job, silos=SILOS)
    narrow = EvaluationOrder(job=job, silos=["a-silo", "c-silo"])
    assert rounds.pool_evaluations(store, read, wide).metrics["num_examples"] == 60
    assert rounds.pool_evaluations(store, read, narrow).metrics["num_examples"] == 40
    record = json.loads(store.get_bytes(layout.RUNS, layout.round_evaluation(job.run_id, 1)))
    assert (record["asked"]["silos"], np.array(record["confusion"]).sum()) == (["a-silo", "c-silo"], 40)
    no_read = lambda *a: pytest.fail("the recorded pooling stands")  # noqa: E731
    assert rounds.pool_evaluations(store, no_read, wide).metrics["num_examples"] == 40
    assert rounds.pool_evaluations(store, no_read, narrow).metrics["num_examples"] == 40

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
        result = aggregate_in_memory(store, job, blobs)
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
    result = aggregate_in_memory(store, job, {s: update_bytes(job, store, s) for s in SILOS})
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
    result = aggregate_in_memory(store, job, blobs_of(job, store))
    assert result["model"] is None and result["error"] == message
    assert store.get_bytes(layout.MODELS, layout.global_model(job.run_id, 1)) is None
    assert store.get_json(layout.RUNS, layout.aggregate_record(job.run_id, 0)) is None


def test_krum_records_which_updates_it_kept(store):
    silos = {f"site{i}": 1.0 + 0.01 * i for i in range(4)} | {"site9": 5.0}  # an outlier within the default bound
    job = make_job(store, "agg-krum-kept", sorted(silos), strategy={"name": "krum", "options": {"f": 1, "m": 2}})
    result = aggregate_in_memory(store, job, {s: update_bytes(job, store, s, scale=k) for s, k in silos.items()})
    assert result["accepted"] == sorted(silos) and result["selected"] == ["site1", "site2"]


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

    ranged = aggregate_in_memory(store, job, blobs, opener=opener, whole_read_budget=0)
    assert ranged["error"] is None and ranged["accepted"] == ["a-silo", "b-silo"]
    assert [r["silo"] for r in ranged["rejected"]] == ["c-silo"]
    assert ranged["rejected"][0]["reason"].startswith("unreadable: ") and "ConditionNotMet" in \
        ranged["rejected"][0]["reason"]
    assert {s: r["sha256"] for s, r in ranged["received"].items()} == {"a-silo": None, "b-silo": None}
    assert all(r["version"] for r in ranged["received"].values())
    assert reads["count"] > 3 * len(weights.decode(blobs["a-silo"])[0])  # header + one read per tensor block

    whole = make_job(store, "agg-ranges-whole", strategy="fedavgm", quorum=0.3)
    two = {s: update_bytes(whole, store, s, scale=1.0 + i) for i, s in enumerate(SILOS[:2])}
    expected = aggregate_in_memory(store, whole, two)
    assert expected["received"]["a-silo"]["sha256"] == weights.sha256(two["a-silo"])
    got = weights.decode(store.get_bytes(layout.MODELS, ModelRef.model_validate(ranged["model"]).path))[0]
    want = weights.decode(store.get_bytes(layout.MODELS, ModelRef.model_validate(expected["model"]).path))[0]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_an_update_opened_with_a_head_is_one_request_when_small_and_pinned_past_it(store):
    """The outboxes' opener reads an update's first bytes with its size and ETag: a small update is then
    whole in memory (nothing more is asked of the service, so a later overwrite cannot reach it); a
    larger one serves its head from memory and the rest by range reads pinned to the version opened."""
    from azure.core.exceptions import ResourceModifiedError

    from fedfunc.storage import PinnedBlob

    container = store.container("test-outbox")
    small, large = b"s" * 100, bytes(range(256)) * 64
    etags = {name: container.upload_blob(f"head/{name}", data, overwrite=True).get_blob_properties().etag
             for name, data in (("small", small), ("large", large), ("empty", b""))}
    opened = {name: PinnedBlob(container.get_blob_client(f"head/{name}"), head=1024)
              for name in ("small", "large", "empty")}
    for name in ("small", "large"):
        container.upload_blob(f"head/{name}", b"changed", overwrite=True)
    assert (opened["small"].size, opened["small"].read(0, 100)) == (100, small)
    assert {name: blob.version for name, blob in opened.items()} == etags
    assert (opened["large"].size, opened["large"].read(10, 1000)) == (len(large), large[10:1010])
    with pytest.raises(ResourceModifiedError):
        opened["large"].read(1000, 100)  # past the head: the service refuses, the blob changed
    assert (opened["empty"].size, opened["empty"].read(0, 0)) == (0, b"")


def signed_side(**side):
    """A digits bundle signed with this silo side (and no clip unless it says so)."""
    return build_bundle(task_dir("digits"), KEY, **{"clip_norm": "off", **side})


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
    result = aggregate_in_memory(store, job, blobs)
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
    result = aggregate_in_memory(store, job, {"a-silo": plain, "b-silo": trained, "c-silo": trained.replace(b"b-silo", b"c-silo")})
    assert result["accepted"] == ["b-silo", "c-silo"]
    assert result["rejected"][0]["reason"] == ("transforms.missing: the signed bundle requires proximal(mu=0.01) in "
                                               "training; the update's history is []")


def test_a_visible_update_above_the_signed_clip_norm_is_rejected(store):
    """The bound the silos clip to is also the orchestrator's: an update claiming the clip but above it is
    rejected by the norm rule (and a spec's tighter bound wins)."""
    clip = {"name": "clip", "options": {"max_norm": 1.0}}
    job = make_job(store, "agg-bound", bundle=signed_side(transforms=[clip]))
    g = rounds.load_global(store, job.model)
    arrays, meta = weights.decode(piped(job, store, "c-silo", clip, scale=1.0))
    forged = weights.encode({k: (v + 0.1).astype(v.dtype) for k, v in g.items()}, meta)  # says clip, is not
    result = aggregate_in_memory(store, job, {"a-silo": piped(job, store, "a-silo", clip, scale=3.0),
                                    "b-silo": piped(job, store, "b-silo", clip, scale=1.01), "c-silo": forged})
    assert result["accepted"] == ["a-silo", "b-silo"]
    assert result["rejected"][0]["reason"].startswith("norm: ‖update − global‖₂ = ") and "bound 1" in \
        result["rejected"][0]["reason"]
    assert "from the bundle (the signed clip norm)" in result["rejected"][0]["reason"]
    tighter = make_job(store, "agg-bound-spec", bundle=signed_side(transforms=[clip]), max_update_norm=0.5)
    assert (tighter.update_bound.max_norm, tighter.update_bound.source) == (0.5, "spec")
