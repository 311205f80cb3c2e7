"""``fedfunc silo-job --aml``: the exact command line the AML job runs, on mounted folders."""
import json
import subprocess
import sys

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.backends.aml import COMMAND
from fedfunc.backends.local import REPO_ROOT
from fedfunc.security.tickets import issue_ticket
from fedfunc.tasks import get_task, xy_to_bytes
from fedfunc.weights import encode, model_to_arrays, sha256


def _mounts(tmp_path, policy):
    data, outbox = tmp_path / "data", tmp_path / "outbox"
    (data / "digits").mkdir(parents=True)
    outbox.mkdir()
    ds = get_task("digits").load_dataset()
    (data / layout.silo_data("digits")).write_bytes(xy_to_bytes(ds.x_train[:100], ds.y_train[:100]))
    model = tmp_path / "global.safetensors"
    model.write_bytes(encode(model_to_arrays(get_task("digits").build_model(seed=0))))
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(policy.model_dump_json())
    return data, model, outbox, policy_file


def _request(tmp_path, model, signed_bundle, trust, silo="aml-silo", ticket_key=None) -> SiloJobRequest:
    """Written to ``tmp_path/request.json``, as the AML command does from its environment variable."""
    req = SiloJobRequest(
        run_id="aml-run", round=0, silo=silo, nonce="n", task="digits",
        hyperparams=signed_bundle.bundle.config["hyperparams"],
        model_url="https://orch.blob.core.windows.net/models/aml-run/round-0000/global.safetensors",
        model_sha256=sha256(model.read_bytes()), outbox_prefix=layout.outbox_prefix("aml-run", 0, silo),
        ticket=issue_ticket(ticket_key or trust.orchestrator, run="aml-run", round=0, silo=silo,
                            code_hash=signed_bundle.code_hash, nonce="n"),
        bundle=signed_bundle.model_dump(mode="json"))
    (tmp_path / "request.json").write_text(req.model_dump_json())
    return req


def _run(tmp_path, data, model, outbox, policy_file):
    assert "--policy ${{inputs.policy}}" in COMMAND and "--outbox ${{outputs.outbox}}" in COMMAND
    return subprocess.run([sys.executable, "-m", "fedfunc", "silo-job", "--aml",
                           "--request", str(tmp_path / "request.json"), "--data", str(data), "--model", str(model),
                           "--policy", str(policy_file), "--outbox", str(outbox)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_aml_mode_trains_from_mounted_folders(tmp_path, policy_for, signed_bundle, trust):
    data, model, outbox, policy_file = _mounts(tmp_path, policy_for("aml-silo"))
    req = _request(tmp_path, model, signed_bundle, trust)
    proc = _run(tmp_path, data, model, outbox, policy_file)
    assert proc.returncode == 0, proc.stderr
    job = outbox / req.outbox_prefix
    assert sorted(p.name for p in job.iterdir()) == [layout.METRICS, layout.UPDATE]
    assert json.loads((job / layout.METRICS).read_text())["num_samples"] == 100
    assert list((outbox / "audit").glob("*.jsonl"))


def test_aml_mode_refuses_a_forged_ticket_without_touching_the_round(tmp_path, policy_for, signed_bundle, trust):
    """A forged job is refused before any data is read and publishes nothing in the round's slot; the
    refusal is in the silo's own trail."""
    from fedfunc.security import keys

    data, model, outbox, policy_file = _mounts(tmp_path, policy_for("aml-silo"))
    req = _request(tmp_path, model, signed_bundle, trust, ticket_key=keys.generate())
    proc = _run(tmp_path, data, model, outbox, policy_file)
    assert proc.returncode != 0 and "ticket.untrusted_issuer" in proc.stderr
    assert not (outbox / req.outbox_prefix).exists()
    trail = "".join(p.read_text() for p in (outbox / "audit").iterdir())
    assert '"rule": "ticket.untrusted_issuer"' in trail
