"""Azure onboarding ensure-steps against a recording gateway: bodies, idempotence, the security table."""
from __future__ import annotations

import pytest

from fedfunc.azure import naming, onboarding
from fedfunc.azure.gateway import AzureCallError
from fedfunc.registry import SiloRecord
from fedfunc.settings import load_settings

from azure_env import aml_env


class RecordingGateway:
    """ARM as a dict of resource id → body; identities get a principal id, like ARM would return."""

    def __init__(self, fail_code: str | None = None):
        self.resources: dict[str, dict] = {}
        self.puts: list[str] = []
        self.fail_code = fail_code

    def put_resource(self, resource_id, api_version, body):
        self.puts.append(resource_id)
        if self.fail_code and "/roleAssignments/" in resource_id:
            raise AzureCallError("The role assignment already exists.", 409, self.fail_code)
        stored = {**body, "properties": dict(body.get("properties", {}))}
        if "/userAssignedIdentities/" in resource_id:
            stored["properties"] |= {"principalId": "11111111-0000-0000-0000-000000000001", "clientId": "c1"}
        self.resources[resource_id] = stored
        return stored

    def get_resource(self, resource_id, api_version):
        return self.resources.get(resource_id)


@pytest.fixture
def aml(tmp_path):
    return load_settings(aml_env(tmp_path)).aml


def onboard(gw, aml, silo="north-eu"):
    return {step: onboarding.ensure(gw, aml, silo, step) for step in onboarding.STEPS}


def test_all_steps_create_the_silo_and_rerun_is_identical(aml):
    gw = RecordingGateway()
    first = onboard(gw, aml)
    snapshot, n = dict(gw.resources), len(gw.puts)
    assert onboard(gw, aml) == first
    assert gw.resources == snapshot and len(gw.puts) == 2 * n  # same ids, same bodies: create-or-update
    assert first["identity"]["principal_id"] == "11111111-0000-0000-0000-000000000001"
    assert first["datastores"] == {"datastores": ["north_eu_data", "north_eu_outbox", "north_eu_policy"]}


def test_bodies_keep_the_lock(aml):
    gw = RecordingGateway()
    onboard(gw, aml)
    p = onboarding.SiloPlan.for_silo("north-eu", aml)
    assert gw.resources[p.account_id]["properties"]["allowSharedKeyAccess"] is False
    compute = gw.resources[f"{p.workspace_id}/computes/{p.compute}"]
    assert compute["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {p.identity_id: {}}}
    for c in onboarding.CONTAINERS:
        ds = gw.resources[f"{p.workspace_id}/datastores/{naming.datastore('north-eu', c)}"]["properties"]
        assert ds["credentials"] == {"credentialsType": "None"} and ds["containerName"] == c
    subs = {k.rsplit("/", 1)[1]: v["properties"] for k, v in gw.resources.items() if "/eventSubscriptions/" in k}
    assert {name: s["destination"]["properties"]["resourceId"].rsplit("/", 1)[1] for name, s in subs.items()} == {
        "outbox-updates": "on_update", "outbox-failures": "on_update", "data-uploads": "on_data_uploaded"}
    for s in subs.values():
        assert s["destination"]["properties"]["resourceId"].startswith(f"{aml.function_app_id}/functions/")
        assert s["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert subs["data-uploads"]["filter"] == {"includedEventTypes": ["Microsoft.Storage.BlobCreated"],
                                              "subjectBeginsWith": "/blobServices/default/containers/data/blobs/"}


def test_role_assignments_follow_the_security_table(aml):
    gw = RecordingGateway()
    onboard(gw, aml)
    p = onboarding.SiloPlan.for_silo("north-eu", aml)
    silo_id = "11111111-0000-0000-0000-000000000001"
    assigned = {(r["properties"]["principalId"], k.split("/providers/Microsoft.Authorization")[0],
                 r["properties"]["roleDefinitionId"].rsplit("/", 1)[1])
                for k, r in gw.resources.items() if "/roleAssignments/" in k}
    reader, contributor = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    assert assigned == {
        (silo_id, p.container_id("data"), reader),
        (silo_id, p.container_id("policy"), reader),
        (silo_id, p.container_id("outbox"), contributor),
        (silo_id, f"{aml.orchestrator_storage_id}/blobServices/default/containers/models", reader),
        (silo_id, f"{aml.orchestrator_storage_id}/blobServices/default/containers/code", reader),
        (aml.orchestrator_principal_id, p.container_id("outbox"), reader),
    }


def test_silos_never_reach_each_other(aml):
    a, b = (onboarding.SiloPlan.for_silo(s, aml) for s in ("north-eu", "south-eu"))
    assert a.account != b.account
    for g in onboarding.role_grants(a, "pa"):
        assert not g.scope.startswith(b.account_id)
        assert g.principal_id != "pa" or g.scope.startswith(a.account_id) or \
            g.scope.endswith(("/containers/models", "/containers/code"))


def test_existing_assignment_under_another_name_is_fine(aml):
    gw = RecordingGateway()
    onboarding.ensure(gw, aml, "north-eu", "identity")
    gw.fail_code = "RoleAssignmentExists"
    assert onboarding.ensure(gw, aml, "north-eu", "role_assignments") == {"role_assignments": 6}


def test_other_assignment_errors_surface(aml):
    gw = RecordingGateway()
    onboarding.ensure(gw, aml, "north-eu", "identity")
    gw.fail_code = "AuthorizationFailed"
    with pytest.raises(AzureCallError, match="already exists"):
        onboarding.ensure(gw, aml, "north-eu", "role_assignments")


def test_roles_before_identity_is_a_clear_error(aml):
    with pytest.raises(AzureCallError, match="identity id-fl-north-eu does not exist"):
        onboarding.ensure(RecordingGateway(), aml, "north-eu", "role_assignments")


def test_unknown_step(aml):
    with pytest.raises(ValueError, match="step: 'vnet'"):
        onboarding.ensure(RecordingGateway(), aml, "north-eu", "vnet")


@pytest.mark.parametrize("silo", ["abc", "north-eu", "a-very-long-silo-name-24"])
def test_registry_record_is_valid(aml, silo):
    rec = onboarding.silo_record(aml, silo, ["k1"])
    assert isinstance(rec, SiloRecord) and rec.outbox_read_sas is None
    assert len(rec.account) <= 24 and len(rec.compute) <= 24 and rec.compute[0].isalpha()
    assert rec.policy_ref == f"https://{rec.account}.blob.core.windows.net/policy/policy.json"


def test_attached_arc_compute_is_used_not_created(aml):
    gw = RecordingGateway()
    p = onboarding.SiloPlan.for_silo("north-eu", aml, "arc-hospital")
    with pytest.raises(AzureCallError, match="compute: 'arc-hospital' is not attached"):
        onboarding.ensure(gw, aml, "north-eu", "compute", compute="arc-hospital")
    gw.resources[f"{p.workspace_id}/computes/arc-hospital"] = {"properties": {"computeType": "Kubernetes"}}
    assert onboarding.ensure(gw, aml, "north-eu", "compute", compute="arc-hospital") == {
        "compute": "arc-hospital", "attached": "Kubernetes"}
    assert gw.puts == []
    assert onboarding.silo_record(aml, "north-eu", [], compute="arc-hospital").compute == "arc-hospital"
