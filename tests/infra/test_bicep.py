"""Offline checks of infra/: syntax (tree-sitter-bicep), the security table as RBAC invariants, wiring."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import armsim
import bicepcheck as bc
from fedfunc.settings import AmlSettings

INFRA = Path(__file__).resolve().parents[2] / "infra"
FILES = sorted(INFRA.rglob("*.bicep"))
ROLES = json.loads((INFRA / "roles.json").read_text())
MAIN, SILO = bc.parse(INFRA / "main.bicep"), bc.parse(INFRA / "modules" / "silo.bicep")


def test_all_files_found():
    assert {p.relative_to(INFRA).as_posix() for p in FILES} >= {
        "main.bicep", "modules/silo.bicep", "modules/network.bicep", "modules/private-endpoint.bicep"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_parses_without_error_nodes(path):
    assert bc.errors(path.read_text()) == []


def test_parser_does_flag_broken_bicep():
    assert bc.errors("resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: \n}\nparam = 3\n")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_module_references_and_role_keys_resolve(path):
    src = path.read_text()
    for ref in re.findall(r"^module \w+ '([^']+)'", src, re.M):
        assert (path.parent / ref).is_file(), ref
    for ref in re.findall(r"loadJsonContent\('([^']+)'\)", src):
        assert (path.parent / ref).resolve() == INFRA / "roles.json"
    for kind, key in re.findall(r"roles\.(builtIn|custom)\.(\w+)", src):
        assert key in ROLES[kind], f"{path.name}: roles.{kind}.{key} is not in roles.json"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_security_invariants_hold(path):
    assert bc.violations(bc.parse(path)) == []


def grants(f):
    return {(g.principal, f.container_name(g.scope) or g.scope, g.role, g.condition) for g in f.grants}


def test_silo_grants_are_exactly_the_security_table():
    assert grants(SILO) == {
        ("siloIdentity", "data", "StorageBlobDataReader", None),
        ("siloIdentity", "policy", "StorageBlobDataReader", None),
        ("siloIdentity", "outbox", "StorageBlobDataContributor", None),
        ("siloIdentity", "models", "StorageBlobDataReader", None),
        ("siloIdentity", "code", "StorageBlobDataReader", None),
        ("param:orchestratorPrincipalId", "outbox", "StorageBlobDataReader", None),
    }
    # the orchestrator's, not created by the silo
    assert SILO.resources["modelsContainer"].existing and SILO.resources["codeContainer"].existing


def test_orchestrator_grants():
    assert grants(MAIN) == {
        ("orchestratorIdentity", "storage", "StorageBlobDataOwner", None),
        ("orchestratorIdentity", "storage", "StorageQueueDataContributor", None),
        ("orchestratorIdentity", "storage", "StorageTableDataContributor", None),
        ("orchestratorIdentity", "workspace", "custom:JobSubmitter", None),
        ("orchestratorIdentity", "vault", "KeyVaultSecretsUser", None),
        ("orchestratorIdentity", "insights", "MonitoringMetricsPublisher", None),
        ("orchestratorIdentity", bc.DEPLOYMENT_SCOPE, "custom:SiloProvisioner", "(appMayOnboard)"),
        ("param:scientistPrincipalIds", "workspace", "Reader", "(!scientistsMaySubmitJobs)"),
        ("param:scientistPrincipalIds", "workspace", "AzureMLDataScientist", "(scientistsMaySubmitJobs)"),
    }


def test_only_the_orchestrator_may_submit_jobs_by_default():
    submitters = {g.principal for g in MAIN.grants + SILO.grants
                  if g.role in ("custom:JobSubmitter", "AzureMLDataScientist") and g.condition is None}
    assert submitters == {"orchestratorIdentity"}
    assert "jobs/*" in " ".join(ROLES["custom"]["JobSubmitter"]["actions"])


def test_group_wide_roles_carry_no_data_access():
    """A role at resource-group scope reaches every silo account: it must be control-plane only."""
    for g in MAIN.grants:
        if g.scope == bc.DEPLOYMENT_SCOPE:
            role = ROLES["custom"][g.role.removeprefix("custom:")]
            assert "dataActions" not in role
            assert not [a for a in role["actions"] if re.search(r"listKeys|listAccountSas|listServiceSas|/\*$", a)]


def test_no_silo_identity_gets_a_role_on_workspace_storage():
    """Silo jobs take their code from the orchestrator's code container; the workspace's storage (AML's own
    code snapshots and logs, shared by every silo) is reached by no silo identity and not by the app."""
    assert not [g for g in MAIN.grants + SILO.grants if g.scope == "workspaceStorage"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_conditional_outputs_are_read_only_under_their_condition(path):
    assert bc.unguarded_conditional_reads(bc.parse(path)) == []


def test_conditional_read_check_flags_an_unguarded_read():
    src = """param on bool = false
module net 'x.bicep' = if (on) { name: 'net' }
module pe 'y.bicep' = [for t in [ 1 ]: if (on) {
  name: 'pe'
  params: { good: on ? net.outputs.subnet : '', bad: net.outputs.subnet }
}]
output fine string = (on) ? net.outputs.subnet : ''
"""
    assert bc.unguarded_conditional_reads(bc.parse("t.bicep", src)) == [
        "t.bicep: pe reads net.outputs.subnet outside `on ? ... : ...`"]


def test_storage_accounts_are_all_checked():
    accounts = [r for f in (MAIN, SILO) for r in f.resources.values() if r.type == bc.STORAGE and not r.existing]
    assert len(accounts) == 3  # orchestrator, workspace, silo: each must pass the shared-key rule above


def test_storage_events_come_from_the_silos_own_account():
    assert bc._props(SILO.resources["storageEvents"].body["properties"])["source"].text == b"storage.id"


def test_function_app_sets_every_setting_and_no_connection_string():
    """Values are checked by tests/infra/test_app_wiring.py (through load_settings and indexing)."""
    settings = set(armsim.app_settings(MAIN, "functionApp"))
    required = {f.alias for f in AmlSettings.model_fields.values()}
    assert required <= settings, required - settings
    assert {"FEDFUNC_STORAGE__blobServiceUri", "FEDFUNC_STORAGE__tableServiceUri", "FEDFUNC_JOB_BACKEND",
            "FEDFUNC_RETRAIN_SCHEDULE"} <= settings
    assert "FEDFUNC_STORAGE" not in settings  # no connection string (it would carry a key)
    assert "FEDFUNC_ORCHESTRATOR_KEY" in settings  # a Key Vault reference, never the key itself


BAD = """
var roles = loadJsonContent('../roles.json')
param orchestratorPrincipalId string
resource me 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = { name: 'me' }
resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'mine'
  properties: { allowSharedKeyAccess: true }
}
resource bs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = { parent: sa, name: 'default' }
resource data 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = { parent: bs, name: 'data' }
resource outbox 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = { parent: bs, name: 'outbox' }
resource other 'Microsoft.Storage/storageAccounts@2023-05-01' existing = { name: 'othersilo' }
resource otherBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = { parent: other, name: 'default' }
resource otherData 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = { parent: otherBlobs, name: 'data' }
resource crossSilo 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid('a')
  scope: otherData
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: me.properties.principalId
  }
}
resource orchestratorOnData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid('b')
  scope: data
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: orchestratorPrincipalId
  }
}
resource orchestratorWritesOutbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid('c')
  scope: outbox
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataContributor)
    principalId: orchestratorPrincipalId
  }
}
resource orchestratorOnGroup 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid('d')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.Reader)
    principalId: orchestratorPrincipalId
  }
}
output accountKey string = sa.listKeys().keys[0].value
"""


def test_checker_flags_a_bad_silo():
    found = "\n".join(bc.violations(bc.parse("bad.bicep", BAD)))
    assert "storage account sa does not set allowSharedKeyAccess: false" in found
    assert "crossSilo gives me StorageBlobDataReader on otherData: an identity may only get roles on storage declared beside it" in found
    assert "orchestratorOnData gives param:orchestratorPrincipalId StorageBlobDataReader on data: only the silo's own identity" in found
    assert "orchestratorWritesOutbox gives param:orchestratorPrincipalId StorageBlobDataContributor on outbox: the orchestrator may only read" in found
    assert "orchestratorOnGroup gives param:orchestratorPrincipalId Reader on <deployment scope>: only the silo's own identity" in found
    assert "listKeys(...) reads keys" in found
    assert "output accountKey looks like a secret" in found


def test_checker_refuses_what_it_cannot_resolve():
    src = BAD.replace("principalId: me.properties.principalId", "principalId: someFunction()")
    assert any("cannot resolve it statically" in v for v in bc.violations(bc.parse("bad.bicep", src)))


def test_python_names_agree_with_silo_bicep():
    """silo.bicep and fedfunc.azure.naming derive identity and datastore names the same way."""
    from fedfunc.azure import naming
    src = SILO.source
    assert "var datastorePrefix = replace(siloName, '-', '_')" in src
    assert "name: '${datastorePrefix}_${c}'" in src
    assert naming.datastore("north-eu", "data") == "north_eu_data"
    assert "name: 'id-fl-${siloName}'" in src and naming.identity("north-eu") == "id-fl-north-eu"
    assert bc.text(SILO.variables["siloContainers"]) == "[ 'data', 'outbox', 'policy' ]"
    datastores = {d["container"]: d["name"] for d in armsim.Arm(MAIN).symbol("sharedDatastores")}
    assert datastores == {"models": AmlSettings.model_fields["models_datastore"].default,
                          "code": AmlSettings.model_fields["code_datastore"].default}


def test_runtime_onboarding_grants_what_silo_bicep_grants():
    """The onboard_silo ensure-steps and silo.bicep are two routes to one security table."""
    from fedfunc.azure import onboarding

    aml = AmlSettings.model_validate({f.alias: v for f, v in zip(AmlSettings.model_fields.values(), [
        "00000000-0000-0000-0000-000000000001", "rg", "mlw-fl", "env:1", str(INFRA), "westeurope",
        "00000000-0000-0000-0000-0000000000aa",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/orchsa",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app"])})
    plan = onboarding.SiloPlan.for_silo("north-eu", aml)
    who = {"silo-principal": "siloIdentity", aml.orchestrator_principal_id: "param:orchestratorPrincipalId"}
    python = {(who[g.principal_id], g.scope.rsplit("/", 1)[1], g.role, None)
              for g in onboarding.role_grants(plan, "silo-principal")}
    assert python == grants(SILO)


def test_runtime_onboarding_creates_silo_bicep_containers():
    from fedfunc.azure import onboarding

    assert tuple(re.findall(r"'(\w+)'", bc.text(SILO.variables["siloContainers"]))) == onboarding.CONTAINERS
