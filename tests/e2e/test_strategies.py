"""Strategies through the real round: state carried across rounds, ``continue_as_new`` and a ``kill -9`` of
the host, bit for bit; a state blob that is missing or altered fails the run clearly; the signed silo side
(FedProx's μ, delta, clip) runs in every silo and shows in the report."""
from __future__ import annotations

import json

from fedfunc import layout, weights
from fedfunc.aggregation import RangeUpdate, decode_state, encode_state
from fedfunc.contracts import ModelRef
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.spec import RunSpec
from fedfunc.storage import blob_service


def replay(stack, run: str, rounds: int) -> list[int]:
    """Aggregate the run's recorded updates again, in process, uninterrupted, from its round-0 model and
    state; assert every round's stored model and state have exactly the replayed bytes. Returns the steps."""
    spec = RunSpec.model_validate(json.loads(stack.download(layout.RUNS, layout.run_spec(run))))
    strategy = spec.strategy.build()
    g, _ = weights.decode(stack.download(layout.MODELS, layout.global_model(run, 0)))
    state = decode_state(stack.download(layout.RUNS, layout.strategy_state(run, 0)), strategy.describe())
    steps = []
    for r in range(rounds):
        record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, r)))
        manifest = json.loads(stack.download(layout.RUNS, layout.round_manifest(run, r)))
        updates = []
        for silo in record["accepted"]:
            outbox = blob_service(read_credentials(silo_home(stack.home, silo)).connection_string)
            data = outbox.get_blob_client(layout.OUTBOX, record["received"][silo]["path"]).download_blob().readall()
            expected = {"run": run, "round": r, "silo": silo, "nonce": manifest["nonce"]}
            updates.append(RangeUpdate(lambda o, n, d=data: d[o:o + n], len(data),
                                       weights.ModelManifest.from_arrays(g), expected=expected))
        result = strategy.aggregate_round(g, updates, state, max_norm=spec.max_update_norm)
        ref = ModelRef.model_validate(record["model"])
        assert stack.download(layout.MODELS, ref.path) == weights.encode(result.arrays, {"run": run, "round": str(r + 1)})
        assert stack.download(layout.RUNS, ref.state_path) == encode_state(result.state, strategy.describe())
        g, state = result.arrays, result.state
        steps.append(state.scalars.get("step"))
    return steps


def test_fedadam_killed_mid_run_carries_exactly_the_state_of_an_uninterrupted_run(stack, spec):
    run = stack.start_run(spec(rounds=4, checkpoint_every=2, run_id="e2e-fedadam-kill",
                               strategy={"name": "fedadam", "options": {"eta": 0.05}}))
    stack.wait_round(run, 2)  # after a continue_as_new, with two optimizer steps stored
    stack.host.kill()
    stack.host.start(timeout=60)
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    assert replay(stack, run, 4) == [1, 2, 3, 4]
    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["strategy"] == {"name": "fedadam", "wrappers": [], "options": {
        "eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3, "bias_correction": True}}


def test_an_altered_strategy_state_fails_the_run_clearly_and_keeps_the_last_good_model(stack, spec):
    run = stack.start_run(spec(rounds=3, checkpoint_every=1, run_id="e2e-state-altered", strategy="fedyogi"))
    stack.wait_round(run, 1)
    orchestrator = blob_service(stack.azurite.orchestrator.connection_string)
    orchestrator.get_blob_client(layout.RUNS, layout.strategy_state(run, 1)).upload_blob(b"\0" * 64, overwrite=True)
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Failed", status
    assert "strategy state: " in status["error"] and "does not match its recorded sha256" in status["error"]
    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["status"] == "failed" and report["model"]["path"] == layout.global_model(run, 1)


def test_the_signed_silo_side_runs_in_every_silo_and_the_report_says_who_was_clipped(stack, spec):
    """FedProx with a bundle signed with μ, delta and a clip small enough to bite: every silo trains with the
    proximal term and sends a clipped delta; the round aggregates it; the report names the clipped silos."""
    silos = spec()["silos"]
    bundle = stack.bundle("digits", {"epochs": 1, "lr": 0.05, "batch_size": 16}, proximal_mu=0.01,
                          transforms=[{"name": "delta"}], clip_norm=0.5)
    run = stack.start_run(spec(bundle=bundle, strategy="fedprox", run_id="e2e-silo-side"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, 0)))
    assert record["accepted"] == sorted(silos)
    for got in record["received"].values():
        assert got["payload"] == "delta" and got["clipped"] is True
        assert [(s["name"], s["options"]) for s in got["transforms"]] == [
            ("proximal", {"mu": 0.01}), ("delta", {}), ("clip", {"max_norm": 0.5})]
    g0 = weights.decode(stack.download(layout.MODELS, layout.global_model(run, 0)))[0]
    g1 = weights.decode(stack.download(layout.MODELS, ModelRef.model_validate(record["model"]).path))[0]
    moved = sum(float(((g1[k].astype("float64") - g0[k]) ** 2).sum()) for k in g0) ** 0.5
    assert 0.3 < moved <= 0.5  # the mean of three clipped deltas of norm 0.5
    report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    assert report["rounds"][0]["clipped"] == sorted(silos) and report["strategy"]["name"] == "fedprox"

