"""Local provisioning: isolation between silos and between silo and orchestrator is enforced by storage."""
import os
import stat

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerClient

from fedfunc import layout
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.security import keys
from fedfunc.security.policy import SiloPolicy
from fedfunc.silo.local import provision_local_silo

DENIED = (ClientAuthenticationError, HttpResponseError)


def test_provisioning_is_idempotent_and_gives_each_silo_its_own_account(silos, azurite, orch_conn, policy_for):
    a, b = silos("prov-a"), silos("prov-b")
    assert a.account != b.account
    again = provision_local_silo("prov-a", azurite_home=azurite.location, orchestrator_conn=orch_conn,
                                 home_root=silos.home_root, initial_policy=policy_for("prov-a"))
    assert again.account == a.account and again.status == "onboarding"


def test_onboarding_never_replaces_the_silo_owners_policy(silos, azurite, orch_conn, trust, policy_for, own_service):
    first = silos("prov-p")
    assert first.trusted_signers == [keys.key_id(trust.scientist.public_key())]
    other_signer = keys.generate().public_key()
    again = provision_local_silo("prov-p", azurite_home=azurite.location, orchestrator_conn=orch_conn,
                                 home_root=silos.home_root,
                                 initial_policy=policy_for("prov-p", trusted_signers=[keys.public_b64(other_signer)]))
    assert again.trusted_signers == first.trusted_signers
    stored = SiloPolicy.model_validate_json(own_service("prov-p").get_blob_client("policy", "policy.json")
                                            .download_blob().readall())
    assert stored.trusted_signers == [keys.public_b64(trust.scientist.public_key())]


def test_silo_home_holds_only_its_own_key_mode_0600(silos, azurite):
    a, b = silos("prov-c"), silos("prov-d")
    path = silo_home(silos.home_root, "prov-c") / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert azurite.account(a.account).key in text
    assert azurite.account(b.account).key not in text and azurite.orchestrator.key not in text


def test_a_silo_key_cannot_read_another_silos_data(silos, silo_with_data):
    silo_with_data("prov-e")
    b = silo_with_data("prov-f")
    a_conn = read_credentials(silo_home(silos.home_root, "prov-e")).connection_string
    forged = BlobServiceClient(b.blob_url, credential=BlobServiceClient.from_connection_string(a_conn).credential)
    with pytest.raises(DENIED):
        forged.get_blob_client(layout.DATA, layout.silo_data("digits", "train") + "data.safetensors").download_blob().readall()
    with pytest.raises(DENIED):
        forged.get_blob_client(layout.OUTBOX, "runs/x/rounds/0000/silos/prov-f/update.safetensors").upload_blob(b"x")


def test_orchestrator_sas_reads_the_outbox_only(silo_with_data, own_service):
    record = silo_with_data("prov-g")
    own = own_service("prov-g")
    own.get_blob_client(layout.OUTBOX, "runs/r/rounds/0000/silos/prov-g/metrics.json").upload_blob(b"{}")
    outbox = ContainerClient.from_container_url(f"{record.blob_url}/{layout.OUTBOX}?{record.outbox_read_sas}")
    assert [b.name for b in outbox.list_blobs()] == ["runs/r/rounds/0000/silos/prov-g/metrics.json"]
    with pytest.raises(DENIED):
        outbox.get_blob_client("runs/r/rounds/0000/silos/prov-g/update.safetensors").upload_blob(b"forged")
    data = ContainerClient.from_container_url(f"{record.blob_url}/{layout.DATA}?{record.outbox_read_sas}")
    with pytest.raises(DENIED):
        data.get_blob_client(layout.silo_data("digits", "train") + "data.safetensors").download_blob().readall()


def test_release_revokes_the_orchestrator_sas_and_frees_the_account(silos, azurite, orch_conn):
    from fedfunc.silo.local import claim_account, release_local_silo

    record = silos("prov-h")
    outbox = ContainerClient.from_container_url(f"{record.blob_url}/{layout.OUTBOX}?{record.outbox_read_sas}")
    list(outbox.list_blobs())
    release_local_silo("prov-h", azurite_home=azurite.location, orchestrator_conn=orch_conn, home_root=silos.home_root)
    assert not silo_home(silos.home_root, "prov-h").exists()
    with pytest.raises(DENIED):
        list(outbox.list_blobs())
    assert claim_account("prov-i", azurite_home=azurite.location, orchestrator_conn=orch_conn) == record.account
    release_local_silo("prov-i", azurite_home=azurite.location, orchestrator_conn=orch_conn, home_root=silos.home_root)


def test_smoke_job_proves_access_and_isolation_from_the_silo_process(silos, own_service):
    from fedfunc.backends.local import LocalProcessBackend

    silos("prov-s")
    result = LocalProcessBackend(silos.home_root).smoke("prov-s", "attempt-1")
    assert result["ok"], result
    assert result["checks"] == {"policy_valid": True, "data_readable": True, "models_write_refused": True,
                                "orchestrator_account_refused": True, "outbox_writable": True}
    assert own_service("prov-s").get_blob_client("outbox", "smoke/attempt-1.json").exists()


def test_smoke_job_fails_without_a_policy(silos, own_service):
    from fedfunc.backends.local import LocalProcessBackend

    silos("prov-t")
    own_service("prov-t").get_blob_client("policy", "policy.json").delete_blob()
    result = LocalProcessBackend(silos.home_root).smoke("prov-t", "attempt-1")
    assert not result["ok"] and "policy.missing" in result["reason"]
