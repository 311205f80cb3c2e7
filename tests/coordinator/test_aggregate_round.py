"""The aggregate and pool_evaluations activities' logic against real storage: every update is read from its
silo's own outbox by the orchestrator's size-bounded reader (through the outbox SAS in the silo registry),
every bad update or evaluation is rejected with its reason, the quorum is checked before anything is
written, a re-run returns the first result, and round 0's model is the bundle's signed initial weights."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fedfunc import layout, weights
from fedfunc.contracts import ModelRef
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


@pytest.fixture(scope="session")
def digits_bundle() -> bytes:
    return build_bundle(task_dir("digits"), keys.generate())


@pytest.fixture
def store(services):
    return services.store


def make_job(store, run: str, bundle: bytes, sample_caps: dict | None = None, ready: list[str] = SILOS,
             **spec_fields) -> RoundJob:
    """Round 0 of a run of the signed ``bundle`` over SILOS, as init_run and prepare_round leave it."""
    stored, _ = store_bundle(store, bundle, len(bundle))
    spec = RunSpec(task="digits", bundle=stored.code_hash, silos=SILOS, quorum=0.6, **spec_fields)
    start = rounds.init_run(store, RunState(run_id=run, spec=spec))
    job = RoundJob(run_id=run, round=0, nonce="n0", model=start.model, spec=spec, update_bound=start.update_bound,
                   deadline="2030-01-01T00:00:00+00:00")
    plan = rounds.prepare_round(store, ready, job, sample_caps=sample_caps)
    return job.model_copy(update={"manifest": plan.manifest})


@pytest.fixture
def job(store, request, digits_bundle):
    run = f"agg-{request.node.name[-40:].replace('_', '-').replace('[', '-').rstrip(']')}"
    job = make_job(store, run, digits_bundle, evaluators=["held-out"], ready=[*SILOS, "held-out"])
    plan = store.get_json(layout.RUNS, job.manifest)
    assert plan["silos"] == SILOS and plan["evaluators"] == ["held-out"]
    return job


def update_bytes(job, store, silo, *, scale=1.0, n=100, add=0.0, **meta_over):
    arrays = rounds.load_global(store, job.model)
    arrays = {k: (v * scale + add).astype(v.dtype) for k, v in arrays.items()}
    meta = {"run": job.run_id, "round": "0", "silo": silo, "nonce": job.nonce, "num_samples": str(n), **meta_over}
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


def aggregate(services, job, blobs: dict[str, bytes], metrics: dict[str, bytes] | None = None):
    updates = {s: publish(services, job, s, data, (metrics or {}).get(s, METRICS)) for s, data in blobs.items()}
    order = AggregateOrder(job=job, updates=updates)
    return rounds.aggregate_round(services.store, services.outbox_reader(), order).wire()


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


def test_the_spec_bound_tightens_the_default(services, store, digits_bundle):
    spec_bound = make_job(store, "agg-spec-bound", digits_bundle, max_update_norm=1.0)
    assert spec_bound.update_bound.source == "spec" and spec_bound.update_bound.max_norm == 1.0
    blobs = {s: update_bytes(spec_bound, store, s, scale=1.5 if s == "c-silo" else 1.0) for s in SILOS}
    [rejected] = aggregate(services, spec_bound, blobs)["rejected"]
    assert rejected["silo"] == "c-silo" and "from the spec" in rejected["reason"]


def test_median_rule_rejects_what_the_absolute_bound_lets_through(services, store, digits_bundle):
    """Within the default bound, an update 6× the round's median norm passes; the spec's relative rule
    rejects it (read twice: measure, then aggregate), naming the rule, the median and the multiple."""
    honest = {s: (lambda job, s=s, k=k: update_bytes(job, store, s, scale=k)) for s, k in
              (("a-silo", 1.1), ("b-silo", 1.12))}
    plain = make_job(store, "agg-no-median", digits_bundle)
    blobs = {**{s: f(plain) for s, f in honest.items()}, "c-silo": update_bytes(plain, store, "c-silo", scale=1.6)}
    assert aggregate(services, plain, blobs)["accepted"] == SILOS
    ruled = make_job(store, "agg-median", digits_bundle, max_update_norm_vs_median=3.0)
    blobs = {**{s: f(ruled) for s, f in honest.items()}, "c-silo": update_bytes(ruled, store, "c-silo", scale=1.6)}
    result = aggregate(services, ruled, blobs)
    assert result["accepted"] == ["a-silo", "b-silo"] and result["num_samples"] == 200
    [rejected] = result["rejected"]
    assert rejected["silo"] == "c-silo" and rejected["reason"].startswith("norm.median:")
    assert "3 × the round's median" in rejected["reason"]


def test_an_update_that_changes_between_the_two_reads_is_rejected(store, digits_bundle):
    job = make_job(store, "agg-swap", digits_bundle, max_update_norm_vs_median=3.0)
    first = {s: update_bytes(job, store, s) for s in SILOS}
    reads = {s: 0 for s in SILOS}

    def read(silo, path, max_bytes):
        if path.endswith(layout.METRICS):
            return METRICS
        reads[silo] += 1
        return first[silo] if silo != "c-silo" or reads[silo] == 1 else update_bytes(job, store, silo, scale=1.01)
    order = AggregateOrder(job=job, updates={s: UpdateNotice(path=f"{s}/{layout.UPDATE}") for s in SILOS})
    result = rounds.aggregate_round(store, read, order)
    assert result.accepted == ["a-silo", "b-silo"] and "changed between reads" in result.rejected[0].reason


def test_num_samples_are_capped_by_the_registered_cap_and_the_spec(services, store, digits_bundle):
    """A silo claiming 10⁶ samples is weighted by its registered cap; the spec's cap binds everyone;
    the result says who was capped, from what, by what."""
    job = make_job(store, "agg-caps", digits_bundle, sample_caps={"c-silo": 50}, max_samples_per_silo=400)
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
