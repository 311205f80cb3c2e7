"""``fedfunc silo-job --aml``: the exact command line the AML job runs, on mounted folders."""
import json
import subprocess
import sys

import numpy as np

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.backends.aml import COMMAND
from fedfunc.backends.local import REPO_ROOT
from fedfunc.security.bundle import open_bundle
from fedfunc.security.tickets import issue_ticket
from fedfunc.weights import sha256
from fedfunc.tasks.builtin.datasets import load, split_train_test


def _mounts(tmp_path, policy, signed_bundle):
    data, outbox = tmp_path / "data", tmp_path / "outbox"
    pool, _ = load("digits")
    for path, blob in split_train_test(pool.take(np.arange(100)), seed=0).files("digits").items():
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        (data / path).write_bytes(blob)
    outbox.mkdir()
    model = tmp_path / "global.safetensors"
    model.write_bytes(open_bundle(signed_bundle).weights())
    bundle = tmp_path / "task.fedbundle"
    bundle.write_bytes(signed_bundle)
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(policy.model_dump_json())
    return data, model, outbox, policy_file, bundle


def _request(tmp_path, model, signed_bundle, trust, silo="aml-silo", ticket_key=None) -> SiloJobRequest:
    """Written to ``tmp_path/request.json``, as the AML command does from its environment variable."""
    code_hash = open_bundle(signed_bundle).code_hash
    req = SiloJobRequest(
        run_id="aml-run", round=0, silo=silo, nonce="n", task="digits",
        model_url="https://orch.blob.core.windows.net/models/aml-run/round-0000/global.safetensors",
        model_sha256=sha256(model.read_bytes()), outbox_prefix=layout.outbox_prefix("aml-run", 0, silo),
        ticket=issue_ticket(ticket_key or trust.orchestrator, run="aml-run", round=0, silo=silo,
                            code_hash=code_hash, nonce="n"),
        bundle=code_hash)
    (tmp_path / "request.json").write_text(req.model_dump_json())
    return req


def _run(tmp_path, data, model, outbox, policy_file, bundle):
    assert "--policy ${{inputs.policy}}" in COMMAND and "--outbox ${{outputs.outbox}}" in COMMAND
    assert "--bundle ${{inputs.bundle}}" in COMMAND
    return subprocess.run([sys.executable, "-m", "fedfunc", "silo-job", "--aml",
                           "--request", str(tmp_path / "request.json"), "--data", str(data), "--model", str(model),
                           "--bundle", str(bundle), "--policy", str(policy_file), "--outbox", str(outbox)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_aml_mode_trains_from_mounted_folders(tmp_path, policy_for, signed_bundle, trust):
    mounts = _mounts(tmp_path, policy_for("aml-silo"), signed_bundle)
    req = _request(tmp_path, mounts[1], signed_bundle, trust)
    proc = _run(tmp_path, *mounts)
    assert proc.returncode == 0, proc.stderr
    job = mounts[2] / req.outbox_prefix
    assert sorted(p.name for p in job.iterdir()) == [layout.EVALUATION, layout.METRICS, layout.UPDATE]
    assert json.loads((job / layout.METRICS).read_text())["num_samples"] == 80
    outbox = mounts[2]
    assert list((outbox / "audit").glob("*.jsonl"))


def test_aml_mode_refuses_a_forged_ticket_without_touching_the_round(tmp_path, policy_for, signed_bundle, trust):
    """A forged job is refused before any data is read and publishes nothing in the round's slot; the
    refusal is in the silo's own trail."""
    from fedfunc.security import keys

    mounts = _mounts(tmp_path, policy_for("aml-silo"), signed_bundle)
    req = _request(tmp_path, mounts[1], signed_bundle, trust, ticket_key=keys.generate())
    proc = _run(tmp_path, *mounts)
    outbox = mounts[2]
    assert proc.returncode != 0 and "ticket.untrusted_issuer" in proc.stderr
    assert not (outbox / req.outbox_prefix).exists()
    trail = "".join(p.read_text() for p in (outbox / "audit").iterdir())
    assert '"rule": "ticket.untrusted_issuer"' in trail
