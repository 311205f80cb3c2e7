"""The security and silo commands as a new user runs them: keygen, sign, audit, silo add/list/disable/remove."""
import json
import time

import pytest
from fedfunc.security import keys
from fedfunc.security.audit import AuditLog
from fedfunc.security.bundle import verify_bundle
from fedfunc.storage import table_service

def test_keygen_and_sign(tmp_path, fedfunc):
    r = fedfunc("keygen", tmp_path / "ada")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ada.pem").exists() and (tmp_path / "ada.pub").exists()
    assert fedfunc("keygen", tmp_path / "ada").exit_code != 0  # never overwrites a private key
    r = fedfunc("sign", "--task", "digits", "--key", tmp_path / "ada.pem", "--out", tmp_path / "d.fedbundle",
                "--set", "epochs=3", "--set", "hidden=32")
    assert r.exit_code == 0, r.output
    pub = keys.load_public(tmp_path / "ada.pub")
    bundle = verify_bundle((tmp_path / "d.fedbundle").read_bytes(), [keys.public_b64(pub)])
    assert bundle.manifest.task == "digits" and bundle.code_hash in r.output.replace("\n", "")
    assert bundle.config.hyperparams == {"epochs": 3, "lr": 0.05, "batch_size": 16, "seed": 0, "hidden": 32}
    shown = fedfunc("bundle", "show", tmp_path / "d.fedbundle")
    assert shown.exit_code == 0 and json.loads(shown.output)["bundle"] == bundle.code_hash
    r = fedfunc("sign", "--task", "nope", "--key", tmp_path / "ada.pem", "--out", tmp_path / "b2.fedbundle")
    assert r.exit_code != 0 and "unknown built-in task" in r.output
    r = fedfunc("sign", "--task", "digits", "--key", tmp_path / "ada.pem", "--out", tmp_path / "b3.fedbundle",
                "--set", "epoch=3")
    assert r.exit_code != 0 and "epoch" in r.output and not (tmp_path / "b3.fedbundle").exists()


def test_sign_fixes_the_silo_side_with_a_clip_by_default(tmp_path, fedfunc):
    """FedProx's μ, the transforms and the clip norm are signed; without --clip-norm the clip is the default
    derived from the initial weights, and --clip-norm off signs none."""
    from fedfunc.pipeline import default_clip_norm
    from fedfunc.security.bundle import open_bundle
    from fedfunc.weights import decode

    assert fedfunc("keygen", tmp_path / "bo").exit_code == 0
    trusted = [keys.public_b64(keys.load_public(tmp_path / "bo.pub"))]

    def sign(name, *flags):
        r = fedfunc("sign", "--task", "digits", "--key", tmp_path / "bo.pem", "--out", tmp_path / name, *flags)
        assert r.exit_code == 0, r.output
        return verify_bundle((tmp_path / name).read_bytes(), trusted).config

    default = sign("a.fedbundle")
    initial = decode(open_bundle((tmp_path / "a.fedbundle").read_bytes()).weights())[0]
    assert default.proximal_mu == 0 and [t.name for t in default.transforms] == ["clip"]
    assert default.clip_norm == default_clip_norm(initial)[0]
    chosen = sign("b.fedbundle", "--proximal-mu", "0.01", "--transform", "delta", "--clip-norm", "3")
    assert chosen.proximal_mu == 0.01
    assert [t.model_dump() for t in chosen.transforms] == [{"name": "delta", "options": {}},
                                                            {"name": "clip", "options": {"max_norm": 3.0}}]
    assert sign("c.fedbundle", "--clip-norm", "off").transforms == []
    for flags, says in [(("--transform", "clip:max_norm=-1"), "max_norm"), (("--clip-norm", "wide"), "--clip-norm"),
                        (("--transform", "zip"), "unknown update transform 'zip'"),
                        (("--proximal-mu", "-1"), "proximal-mu")]:
        r = fedfunc("sign", "--task", "digits", "--key", tmp_path / "bo.pem", "--out", tmp_path / "x.fedbundle", *flags)
        assert r.exit_code != 0 and says in r.output, r.output


def test_audit_lists_and_filters(azurite, fedfunc):
    conn = azurite.orchestrator.connection_string
    log = AuditLog.create(table_service(conn))
    log.record("ticket_issued", run="cli-run", round=0, silo="alpha", code_hash="ab" * 8)
    log.record("job_refused", run="cli-run", round=0, silo="beta", rule="ticket.signature")
    r = fedfunc("audit", "--run", "cli-run", "--kind", "job_refused", "--json", env={"FEDFUNC_STORAGE": conn})
    assert r.exit_code == 0, r.output
    events = json.loads(r.output)
    assert [(e["silo"], e["detail"]["rule"]) for e in events] == [("beta", "ticket.signature")]
    r = fedfunc("audit", "--run", "cli-run", "--since", "1h", env={"FEDFUNC_STORAGE": conn})
    assert r.exit_code == 0 and "audit trail (2 entries)" in r.output
    assert fedfunc("audit", "--since", "yesterday", env={"FEDFUNC_STORAGE": conn}).exit_code != 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from fedfunc.devstack import DevStack
    with DevStack(tmp_path_factory.mktemp("clistack")) as s:
        yield s


def test_silo_commands_against_a_running_host(stack, fedfunc):
    host = ["--host", stack.host.origin]
    admin, scientist = ["--api-key", stack.admin_key], ["--api-key", stack.scientist_key]
    pub = keys.public_b64(stack.scientist_signing_key.public_key())
    started = time.monotonic()
    r = fedfunc("silo", "add", "cli-four", "--trust-signer", pub, "--allow-task", "digits", *host, *admin)
    onboard_s = time.monotonic() - started
    assert r.exit_code == 0, r.output
    assert "is ready" in r.output
    print(f"onboarding a local silo end to end through the CLI: {onboard_s:.2f} s")
    r = fedfunc("silo", "list", *host, *scientist)
    assert r.exit_code == 0 and "cli-four" in r.output and "ready" in r.output
    r = fedfunc("silo", "add", "cli-five", *host, *scientist)
    assert r.exit_code == 1 and "403" in r.output and "needs role admin" in r.output
    r = fedfunc("silo", "list", *host, "--api-key", "nobody")
    assert r.exit_code == 1 and "401" in r.output
    assert fedfunc("silo", "disable", "cli-four", *host, *admin).exit_code == 0
    assert "disabled" in fedfunc("silo", "list", *host, *admin).output
    r = fedfunc("silo", "policy", "cli-four", "--local-home", stack.home)
    assert r.exit_code == 0 and json.loads(r.output)["allowed_tasks"] == ["digits"]
    assert fedfunc("silo", "remove", "cli-four", *host, *admin).exit_code == 0
    assert "cli-four" not in fedfunc("silo", "list", *host, *admin).output
    r = fedfunc("silo", "disable", "cli-four", *host, *admin)
    assert r.exit_code == 1 and "unknown silo 'cli-four'" in r.output
