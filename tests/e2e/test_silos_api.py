"""The admin's silo API: bad onboarding requests get a 400 naming the field; a failed onboarding leaves
no half-registered silo; disabling and listing."""
from __future__ import annotations

import re

import pytest

from fedfunc.azurite import read_accounts
from fedfunc.host.testing import TERMINAL, wait_until
from fedfunc.security import keys
from fedfunc.security.policy import POLICY_CONTAINER, SiloPolicy, write_policy
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.local import claim_account, release_local_silo
from fedfunc.storage import blob_service


@pytest.mark.parametrize("body, named", [
    ({"name": "X"}, "name"),
    ({"name": "ok-name", "compute": "gpu-cluster"}, "compute"),
    ({"name": "ok-name", "policy": {"trusted_signers": ["not-a-key"]}}, "trusted_signers"),
    ({"name": "ok-name", "policy": {"allowed_tasks": ["Image Net"]}}, "Image Net"),
    ({"name": "ok-name", "policy": {"max_rounds_per_day": -1}}, "max_rounds_per_day"),
    ({"name": "ok-name", "surprise": True}, "surprise"),
    (["not", "an", "object"], "JSON object"),
])
def test_bad_onboarding_request_is_400_naming_the_field(stack, body, named):
    r = stack.api("POST", "/api/silos", body, role="admin", expect=(400,))
    assert named in r["error"]
    assert "ok-name" not in {s["name"] for s in stack.api("GET", "/api/silos", role="admin")["silos"]}


def test_a_failed_onboarding_leaves_no_half_registered_silo(stack, own_silo):
    """The smoke job fails because the silo's storage holds a policy for another silo; the orchestration
    abandons the onboarding: a new silo is not left registered, and a silo that was ready stays ready."""
    wrong = SiloPolicy(silo="someone-else",
                       orchestrator_keys=[keys.public_b64(keys.load_private(stack.orchestrator_key_path).public_key())])
    ready = own_silo("e2e-was-ready", data=False)
    write_policy(read_credentials(silo_home(stack.home, ready)).connection_string, wrong, replace=True)  # its owner's
    new = "e2e-doomed"  # the account it will be given still holds another silo's policy
    account = read_accounts(stack.azurite.location)[claim_account(
        new, azurite_home=stack.azurite.location, orchestrator_conn=stack.azurite.orchestrator.connection_string).account]
    try:
        blob_service(account.connection_string).create_container(POLICY_CONTAINER)
        write_policy(account.connection_string, wrong, replace=True)
        for name in (ready, new):  # both onboardings run at once
            stack.api("POST", "/api/silos", {"name": name, "compute": "local", "policy": stack.silo_policy()},
                      role="admin")
        for name in (ready, new):
            status = wait_until(lambda: (s := stack.api("GET", f"/api/silos/{name}/onboarding", role="admin"))
                                ["runtime_status"] in TERMINAL and s, 120, interval=0.2, what=f"onboarding {name}")
            assert status["runtime_status"] == "Failed", status
            assert status["output"].startswith(f"onboarding {name} failed at smoke_test_silo: ")
            assert "policy_valid" in status["output"]
        silos = {s["name"]: s["status"] for s in stack.api("GET", "/api/silos", role="admin")["silos"]}
        assert new not in silos and silos[ready] == "ready"
    finally:  # abandoning keeps a new silo's storage for its next attempt; this test frees it
        release_local_silo(new, azurite_home=stack.azurite.location,
                           orchestrator_conn=stack.azurite.orchestrator.connection_string, home_root=stack.home)


def test_silo_listing_hides_credentials_and_disable_is_admin_only(stack):
    silos = stack.api("GET", "/api/silos", role="scientist")["silos"]
    assert {"site-1", "site-2", "site-3"} <= {s["name"] for s in silos}
    assert all("outbox_read_sas" not in s for s in silos)
    r = stack.api("POST", "/api/silos/site-1/disable", role="scientist", expect=(403,))
    assert r["rule"] == "auth.role"
    assert stack.api("POST", "/api/silos/nowhere/disable", role="admin", expect=(404,))["error"]


def test_silo_owner_uploads_data_with_the_cli(stack, tmp_path, digits, fedfunc, own_silo):
    """The owner's upload lands in the silo's own data, train and test parts, with the silo's own key;
    files that do not parse are refused naming the file (and row), and nothing is uploaded."""
    import pickle

    from fedfunc.weights import decode

    silo = own_silo("e2e-upload", data=False)
    home = ["--local-home", str(stack.home)]
    ok = fedfunc("silo", "upload", silo, "--task", "digits", "--builtin-part", "2/3", *home)
    assert ok.exit_code == 0, ok.output
    data = blob_service(read_credentials(silo_home(stack.home, silo)).connection_string).get_container_client("data")
    for part, split in (("train", digits[1].train), ("test", digits[1].test)):
        x = decode(data.get_blob_client(f"digits/{part}/data.safetensors").download_blob().readall())[0]["x"]
        assert x.dtype.name == "float32" and len(x) == len(split)

    pickled = tmp_path / "data.safetensors"
    pickled.write_bytes(pickle.dumps({"x": [1.0], "y": [0]}))
    bad = fedfunc("silo", "upload", silo, "--task", "digits", "--train", pickled, *home)
    assert bad.exit_code == 2 and "--train" in bad.output and "not a safetensors file" in bad.output
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.csv").write_text("x,label\n1,0\n")
    (tmp_path / "tables" / "b.csv").write_text("x,label\n1,0\n2\n")
    bad = fedfunc("silo", "upload", silo, "--task", "upload-check", "--train", tmp_path / "tables", *home)
    assert bad.exit_code == 2 and "b.csv,row2" in re.sub(r"[\s│]", "", bad.output)  # the error box wraps lines
    assert not list(data.list_blobs(name_starts_with="upload-check/"))  # nothing half-uploaded
    both = fedfunc("silo", "upload", silo, "--task", "digits", "--train", pickled, "--builtin-part", "1/3", *home)
    assert both.exit_code == 2 and "give --train/--test, or --builtin-part" in both.output
