"""The default bound on updates, on the real system: with no bound in the spec, a silo that adds a large
constant to every weight is rejected each round with the rule, and the global model's accuracy stays
within 2 points of the same run without that silo; with the bound opened wide, the same attack wrecks it."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from e2e_helpers import run_spec

from fedfunc import layout, weights
from fedfunc.security import keys
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.storage import blob_service

ATTACKER = "site-const"
CONSTANT = 1.0      # added to every weight (the weights' RMS is about 0.07)
CLAIMED = 10 ** 6   # samples the attacker claims
CAP = 1000          # what the admin registered for the attacker's data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def attacker(stack, fedfunc, tmp_path_factory):
    """A silo whose owner publishes crafted updates into its own outbox. Its policy trusts no orchestrator
    key, so its real jobs are refused without touching the round: every update the round sees is crafted."""
    stack.add_silo(ATTACKER, max_samples=CAP)
    policy = json.loads(fedfunc("silo", "policy", ATTACKER, "--local-home", stack.home).output)
    policy["orchestrator_keys"] = [keys.public_b64(keys.generate().public_key())]
    path = tmp_path_factory.mktemp("attacker") / "policy.json"
    path.write_text(json.dumps(policy))
    r = fedfunc("silo", "policy", ATTACKER, "--local-home", stack.home, "--set", path)
    assert r.exit_code == 0, r.output
    yield ATTACKER
    stack.api("DELETE", f"/api/silos/{ATTACKER}", role="admin")


def attack(stack, run: str, rounds: int) -> None:
    """Each round: the global model plus CONSTANT, with this round's nonce, claiming CLAIMED samples."""
    outbox = blob_service(read_credentials(silo_home(stack.home, ATTACKER)).connection_string) \
        .get_container_client(layout.OUTBOX)
    for r in range(rounds):
        stack.wait_round(run, r)
        model = weights.decode(stack.download(layout.MODELS, layout.global_model(run, r)))[0]
        nonce = json.loads(stack.download(layout.RUNS, layout.round_manifest(run, r)))["nonce"]
        poisoned = weights.encode({k: (v + CONSTANT).astype(v.dtype) for k, v in model.items()}, {
            "run": run, "round": str(r), "silo": ATTACKER, "nonce": nonce, "num_samples": str(CLAIMED)})
        prefix = layout.outbox_prefix(run, r, ATTACKER)
        outbox.upload_blob(prefix + layout.METRICS, json.dumps({"loss": 0.01, "num_samples": CLAIMED}).encode())
        outbox.upload_blob(prefix + layout.UPDATE, poisoned)


def accuracy(status: dict) -> float:
    assert status["runtime_status"] == "Completed", status
    return status["history"][-1]["metrics"]["accuracy"]


def test_default_bound_keeps_a_constant_adding_silo_out(stack, spec, attacker):
    """Three rounds of two local epochs, so both runs are near convergence: between two runs of the same
    spec (the silos' shuffles derive from the run id) accuracy then moves by tenths of a point, not points."""
    rounds, honest = 3, spec()["silos"]
    bundle = stack.signed_bundle("digits", {"epochs": 2, "lr": 0.05, "batch_size": 16, "seed": 0})
    spec = functools.partial(run_spec, bundle)
    attacked = stack.start_run(spec(silos=[*honest, attacker], rounds=rounds, quorum=0.75, run_id="e2e-bound-default"))
    attack(stack, attacked, rounds)
    with_attacker = stack.wait_run(attacked, timeout=300)
    for r in with_attacker["history"]:
        outcome = r["silos"][attacker]
        assert outcome["state"] == "rejected", outcome
        assert outcome["reason"].startswith("norm: ‖update − global‖₂") and "from the default" in outcome["reason"]
    report = json.loads(stack.download(layout.RUNS, layout.report(attacked, "json")))
    assert report["update_bound"]["source"] == "default"
    assert report["rounds"][0]["silos"][attacker]["state"] == "rejected"

    without = stack.wait_run(stack.start_run(spec(rounds=rounds, run_id="e2e-bound-without")), timeout=300)
    print(f"accuracy after {rounds} rounds: {accuracy(with_attacker):.4f} with the attacker (rejected), "
          f"{accuracy(without):.4f} without it")
    assert abs(accuracy(with_attacker) - accuracy(without)) <= 0.02

    # The same attack with the bound opened wide: accepted, weighted by the registered cap, and ruinous.
    opened = stack.start_run(spec(silos=[*honest, attacker], rounds=1, quorum=0.75, max_update_norm=1e9,
                                  run_id="e2e-bound-opened"))
    attack(stack, opened, 1)
    wrecked = stack.wait_run(opened, timeout=300)
    outcome = wrecked["history"][0]["silos"][attacker]
    assert outcome["state"] == "received"
    assert outcome["num_samples"] == CAP and outcome["capped"]["reported"] == CLAIMED
    print(f"with the bound opened, after 1 round: {accuracy(wrecked):.4f}")
    assert accuracy(wrecked) < accuracy(without) - 0.3
