"""The issue's "must show", on the real system (Azurite + the Function App on ``fedfunc host`` + local
silo processes): while a run trains, a fourth silo is added from the CLI and trains from the next round,
and a forged ticket, an unsigned bundle, a cross-silo write and a scientist calling an admin route are
each refused with a clear reason — and the run still completes."""
from __future__ import annotations

import json
import time

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.security import keys
from fedfunc.security.tickets import issue_ticket
from fedfunc.security.audit import SiloAuditTrail
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.io import BlobOutbox
from fedfunc.tasks.builtin.datasets import silo_parts
from fedfunc.weights import sha256

HP = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}
FIRST = ("lock-1", "lock-2", "lock-3")
FOURTH = "lock-4"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from fedfunc.devstack import DevStack

    parts = silo_parts("digits", len(FIRST) + 1, alpha=None, seed=0)
    with DevStack(tmp_path_factory.mktemp("lockdown")) as s:
        for silo, part in zip(FIRST, parts):
            s.add_silo(silo, policy=s.silo_policy(("digits",)))
            s.upload_data(silo, part.files("digits"))
        s.fourth_partition = parts[-1].files("digits")
        yield s


def _attack_request(stack, silo: str, run: str, bundle: str | None, ticket: str | None) -> SiloJobRequest:
    model = stack.download(layout.MODELS, layout.global_model("lockdown-run", 0))
    return SiloJobRequest(run_id=run, round=0, silo=silo, nonce="n", task="digits",
                          model_url=f"http://127.0.0.1:9/{layout.MODELS}/x", model_sha256=sha256(model),
                          outbox_prefix=layout.outbox_prefix(run, 0, silo), ticket=ticket, bundle=bundle)


def _refusal(stack, silo: str, request: SiloJobRequest, timeout: float = 120) -> dict:
    """The silo's own trail entry refusing ``request``; nothing of the job may be in its outbox slot but
    ``failed.json`` (authenticated jobs only)."""
    own = BlobServiceClient.from_connection_string(read_credentials(silo_home(stack.home, silo)).connection_string)
    trail = SiloAuditTrail(BlobOutbox(own.get_container_client(layout.OUTBOX)), silo)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        refused = [e for e in trail.recent() if e["kind"] == "job_refused" and e["job"] == request.job_key]
        if refused:
            assert not own.get_blob_client(layout.OUTBOX, request.outbox_prefix + layout.UPDATE).exists()
            return refused[0]["detail"]
        time.sleep(0.2)
    raise TimeoutError(f"silo {silo} did not refuse {request.job_key}")


def test_lockdown_while_a_run_goes_on(stack, fedfunc):
    bundle = stack.bundle("digits", HP)
    run = stack.start_run({"silos": "all", "rounds": 3, "round_deadline_s": 240, "bundle": bundle,
                           "run_id": "lockdown-run"})
    stack.wait_round(run, 0)

    # A fourth silo, from the CLI as a new user would, while round 0 trains.
    pub = keys.public_b64(stack.scientist_signing_key.public_key())
    r = fedfunc("silo", "add", FOURTH, "--trust-signer", pub, "--allow-task", "digits",
                "--host", stack.host.origin, "--api-key", stack.admin_key)
    assert r.exit_code == 0, r.output
    stack.upload_data(FOURTH, stack.fourth_partition)

    backend = LocalProcessBackend(stack.home)
    # Forged ticket: someone who can start processes on silo lock-1's compute, without the orchestrator's key.
    forged = _attack_request(stack, "lock-1", "attack-forged", bundle, None)
    forged = forged.model_copy(update={"ticket": issue_ticket(keys.generate(), run="attack-forged", round=0,
                                                             silo="lock-1", code_hash=bundle, nonce="n")})
    backend.submit(forged)
    # Unsigned bundle: even a job the orchestrator's key ticketed runs no code without a trusted signature.
    unsigned = _attack_request(stack, "lock-2", "attack-unsigned", None, None)
    unsigned = unsigned.model_copy(update={"ticket": issue_ticket(
        keys.load_private(stack.orchestrator_key_path), run="attack-unsigned", round=0, silo="lock-2",
        code_hash="", nonce="n")})
    backend.submit(unsigned)
    assert _refusal(stack, "lock-1", forged)["rule"] == "ticket.untrusted_issuer"
    refused = _refusal(stack, "lock-2", unsigned)
    assert refused["rule"] == "bundle.unsigned" and "names no signed task bundle" in refused["message"]
    own_2 = BlobServiceClient.from_connection_string(read_credentials(silo_home(stack.home, "lock-2")).connection_string)
    failed = json.loads(own_2.get_blob_client(layout.OUTBOX, unsigned.outbox_prefix + layout.FAILED)
                        .download_blob().readall())
    assert failed["rule"] == "bundle.unsigned"  # a ticketed job says why in its round's slot

    # Cross-silo write: silo lock-1's own key against silo lock-3's outbox.
    key_of_1 = BlobServiceClient.from_connection_string(
        read_credentials(silo_home(stack.home, "lock-1")).connection_string).credential
    url_of_3 = read_credentials(silo_home(stack.home, "lock-3")).connection_string.split("BlobEndpoint=")[1].split(";")[0]
    with pytest.raises(HttpResponseError) as err:
        BlobServiceClient(url_of_3, credential=key_of_1).get_blob_client(
            layout.OUTBOX, layout.outbox_prefix(run, 1, "lock-3") + layout.UPDATE).upload_blob(b"forged")
    assert err.value.status_code == 403

    # A scientist calling an admin route.
    body = stack.api("POST", "/api/silos", {"name": "lock-5", "compute": "local"}, role="scientist", expect=(403,))
    assert body["rule"] == "auth.role" and "needs role admin" in body["message"]

    # The silo's own audit trail, read by the admin through the orchestrator's outbox access.
    r = fedfunc("audit", "--silo-logs", "--silo", "lock-1", "--kind", "job_refused", "--json",
                env={"FEDFUNC_STORAGE": stack.azurite.orchestrator.connection_string})
    assert r.exit_code == 0, r.output
    refused = [e for e in json.loads(r.output) if e["run"] == "attack-forged"]
    assert refused and refused[0]["source"] == "silo:lock-1"
    assert refused[0]["detail"]["rule"] == "ticket.untrusted_issuer"

    status = stack.wait_run(run, timeout=600)
    assert status["runtime_status"] == "Completed", status
    history = status["history"]
    assert FOURTH not in history[0]["silos"]
    assert history[-1]["silos"][FOURTH]["state"] == "received"
    assert all(o["state"] == "received" for r in history for s, o in r["silos"].items() if s in FIRST)
