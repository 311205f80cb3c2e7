"""The admin's silo API: bad onboarding requests get a 400 naming the field; a failed onboarding leaves
no half-registered silo; disabling and listing."""
from __future__ import annotations

import pytest

from fedfunc.coordinator import onboarding
from fedfunc.coordinator.services import Services
from fedfunc.registry import SiloRecord, UnknownSilo
from fedfunc.settings import load_settings


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


def test_abandoned_onboarding_leaves_no_registry_entry_but_keeps_ready_silos(stack, monkeypatch):
    monkeypatch.setenv("FEDFUNC_HOST_URL", stack.host.origin)
    monkeypatch.setenv("FEDFUNC_HOST_MASTER_KEY", stack.master_key)  # the subscription routes need it
    svc = Services(load_settings(stack.settings()))
    svc.registry.put(SiloRecord(name="half-done", account="silo12", blob_url="http://127.0.0.1:1/silo12",
                                compute="local", policy_ref="x"))
    onboarding.abandon(svc, onboarding.SiloRequest(name="half-done"))
    with pytest.raises(UnknownSilo):
        svc.registry.get("half-done")
    onboarding.abandon(svc, onboarding.SiloRequest(name="site-1"))
    assert svc.registry.get("site-1").status == "ready"


def test_silo_listing_hides_credentials_and_disable_is_admin_only(stack):
    silos = stack.api("GET", "/api/silos", role="scientist")["silos"]
    assert {"site-1", "site-2", "site-3"} <= {s["name"] for s in silos}
    assert all("outbox_read_sas" not in s for s in silos)
    r = stack.api("POST", "/api/silos/site-1/disable", role="scientist", expect=(403,))
    assert r["rule"] == "auth.role"
    assert stack.api("POST", "/api/silos/nowhere/disable", role="admin", expect=(404,))["error"]


def test_silo_owner_uploads_data_with_the_cli(stack, tmp_path, digits, fedfunc):
    """The owner's upload lands in the silo's own data, train and test parts, with the silo's own key;
    files that do not parse are refused naming the file (and row), and nothing is uploaded."""
    import pickle

    from fedfunc.silo.home import read_credentials, silo_home
    from fedfunc.storage import blob_service
    from fedfunc.weights import decode

    home = ["--local-home", str(stack.home)]
    ok = fedfunc("silo", "upload", "site-2", "--task", "digits", "--builtin-part", "2/3", *home)
    assert ok.exit_code == 0, ok.output
    data = blob_service(read_credentials(silo_home(stack.home, "site-2")).connection_string).get_container_client("data")
    for part, split in (("train", digits[1].train), ("test", digits[1].test)):
        x = decode(data.get_blob_client(f"digits/{part}/data.safetensors").download_blob().readall())[0]["x"]
        assert x.dtype.name == "float32" and len(x) == len(split)

    pickled = tmp_path / "data.safetensors"
    pickled.write_bytes(pickle.dumps({"x": [1.0], "y": [0]}))
    bad = fedfunc("silo", "upload", "site-2", "--task", "digits", "--train", pickled, *home)
    assert bad.exit_code == 2 and "--train" in bad.output and "not a safetensors file" in bad.output
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.csv").write_text("x,label\n1,0\n")
    (tmp_path / "tables" / "b.csv").write_text("x,label\n1,0\n2\n")
    bad = fedfunc("silo", "upload", "site-2", "--task", "tabular", "--train", tmp_path / "tables", *home)
    assert bad.exit_code == 2 and "b.csv, row 2" in bad.output.replace("\n", "")
    assert not list(data.list_blobs(name_starts_with="tabular/"))  # nothing half-uploaded
    both = fedfunc("silo", "upload", "site-2", "--task", "digits", "--train", pickled, "--builtin-part", "1/3", *home)
    assert both.exit_code == 2 and "give --train/--test, or --builtin-part" in both.output
