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
    ({"name": "ok-name", "policy": {"allowed_tasks": ["imagenet"]}}, "imagenet"),
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


def test_silo_owner_uploads_data_with_the_cli(stack, tmp_path, digits):
    """The owner's upload lands in the silo's own data with the silo's own key; bad files are refused."""
    import pickle

    from typer.testing import CliRunner

    from fedfunc.cli import _register, app
    from fedfunc.silo.home import read_credentials, silo_home
    from fedfunc.storage import blob_service
    from fedfunc.tasks import xy_from_bytes

    _register()
    home = ["--local-home", str(stack.home)]
    ok = CliRunner().invoke(app, ["silo", "upload", "site-2", "--task", "digits", "--builtin-part", "2/3", *home])
    assert ok.exit_code == 0, ok.output
    creds = read_credentials(silo_home(stack.home, "site-2"))
    x, y = xy_from_bytes(blob_service(creds.connection_string).get_blob_client(
        "data", "digits/train.safetensors").download_blob().readall())
    assert len(y) == int(ok.output.split()[1]) and x.dtype.name == "float32"

    pickled = tmp_path / "data.safetensors"
    pickled.write_bytes(pickle.dumps({"x": [1.0], "y": [0]}))
    bad = CliRunner().invoke(app, ["silo", "upload", "site-2", "--task", "digits", "--file", str(pickled), *home])
    assert bad.exit_code == 2 and "--file" in bad.output
    both = CliRunner().invoke(app, ["silo", "upload", "site-2", "--task", "digits", "--file", str(pickled),
                                    "--builtin-part", "1/3", *home])
    assert both.exit_code == 2 and "exactly one" in both.output
