"""Onboarding a silo on Azure: the steps of ``onboard_silo``, each an idempotent ensure-step.

Each step is one or more ARM PUTs through ``AzureGateway.put_resource`` (create-or-update), so a
retried activity or a re-run onboarding leaves the same resources. The bodies mirror
``infra/modules/silo.bicep`` (same API versions, same roles from infra/roles.json); tests check that
both grant exactly the same roles. The alternative, recommended when the app should not hold
provisioning rights (main.bicep ``appMayOnboard=false``), is that an admin deploys silo.bicep.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from fedfunc import layout
from fedfunc.azure import naming, roles
from fedfunc.azure.gateway import AzureCallError, AzureGateway
from fedfunc.backends.aml import CODE_CONTAINER
from fedfunc.registry import SiloRecord
from fedfunc.security.policy import POLICY_BLOB, POLICY_CONTAINER
from fedfunc.settings import AmlSettings

STORAGE_API, MSI_API, ML_API, AUTH_API, EVENTGRID_API = "2023-05-01", "2023-01-31", "2024-10-01", "2022-04-01", "2022-06-15"
CONTAINERS = (layout.DATA, layout.OUTBOX, POLICY_CONTAINER)
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
STEPS = ("storage", "containers", "identity", "compute", "datastores", "role_assignments", "event_subscriptions")


@dataclass(frozen=True)
class Subscription:
    """One Event Grid subscription on a silo's storage: BlobCreated under a prefix, to one app function."""

    name: str
    function: str
    subject_begins_with: str
    subject_ends_with: str = ""


def _blobs(container: str, prefix: str = "") -> str:
    return f"/blobServices/default/containers/{container}/blobs/{prefix}"


# The same three as infra/modules/silo.bicep (a test compares them): updates and failure notes to on_update,
# the silo owner's data uploads to on_data_uploaded (retraining).
SUBSCRIPTIONS = (
    Subscription("outbox-updates", "on_update", _blobs(layout.OUTBOX, "runs/"), ".safetensors"),
    Subscription("outbox-failures", "on_update", _blobs(layout.OUTBOX, "runs/"), f"/{layout.FAILED}"),
    Subscription("data-uploads", "on_data_uploaded", _blobs(layout.DATA)),
)


@dataclass(frozen=True)
class SiloPlan:
    """Every name and resource id of one silo, derived from its name and the app's settings."""

    silo: str
    aml: AmlSettings
    account: str
    compute: str

    @classmethod
    def for_silo(cls, silo: str, aml: AmlSettings, compute: str | None = None) -> "SiloPlan":
        """``compute`` names an already attached compute (Arc Kubernetes); by default onboarding creates one."""
        rg = f"/subscriptions/{aml.subscription_id}/resourceGroups/{aml.resource_group}"
        return cls(silo, aml, naming.storage_account(silo, rg), compute or naming.compute(silo))

    @property
    def attached(self) -> bool:
        return self.compute != naming.compute(self.silo)

    @property
    def group_id(self) -> str:
        return f"/subscriptions/{self.aml.subscription_id}/resourceGroups/{self.aml.resource_group}"

    @property
    def account_id(self) -> str:
        return f"{self.group_id}/providers/Microsoft.Storage/storageAccounts/{self.account}"

    def container_id(self, container: str) -> str:
        return f"{self.account_id}/blobServices/default/containers/{container}"

    @property
    def identity_id(self) -> str:
        return f"{self.group_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{naming.identity(self.silo)}"

    @property
    def workspace_id(self) -> str:
        return f"{self.group_id}/providers/Microsoft.MachineLearningServices/workspaces/{self.aml.workspace}"

    @property
    def topic_id(self) -> str:
        return f"{self.group_id}/providers/Microsoft.EventGrid/systemTopics/egt-fl-{self.silo}"

    @property
    def blob_url(self) -> str:
        return f"https://{self.account}.blob.core.windows.net"


@dataclass(frozen=True)
class Grant:
    scope: str
    principal_id: str
    role: str  # key in infra/roles.json builtIn


def role_grants(plan: SiloPlan, silo_principal_id: str) -> list[Grant]:
    """The security table for one silo (DESIGN.md), grant for grant what silo.bicep assigns. The silo reads
    two of the orchestrator's containers, global models and job code; nothing in the workspace's storage."""
    reader, contributor = "StorageBlobDataReader", "StorageBlobDataContributor"
    orchestrator = plan.aml.orchestrator_storage_id + "/blobServices/default/containers/"
    return [
        Grant(plan.container_id(layout.DATA), silo_principal_id, reader),
        Grant(plan.container_id(POLICY_CONTAINER), silo_principal_id, reader),
        Grant(plan.container_id(layout.OUTBOX), silo_principal_id, contributor),
        Grant(orchestrator + layout.MODELS, silo_principal_id, reader),
        Grant(orchestrator + CODE_CONTAINER, silo_principal_id, reader),
        Grant(plan.container_id(layout.OUTBOX), plan.aml.orchestrator_principal_id, reader),
    ]


def assignment_id(grant: Grant) -> str:
    """Deterministic assignment name (like Bicep's ``guid(scope, principal, role)``): a re-PUT is the same one."""
    name = uuid.uuid5(uuid.NAMESPACE_URL, f"{grant.scope}|{grant.principal_id}|{roles.builtin(grant.role)}")
    return f"{grant.scope}/providers/Microsoft.Authorization/roleAssignments/{name}"


def _storage(gw: AzureGateway, p: SiloPlan) -> dict:
    gw.put_resource(p.account_id, STORAGE_API, {
        "location": p.aml.location, "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
        "properties": {"allowSharedKeyAccess": False, "allowBlobPublicAccess": False,
                       "defaultToOAuthAuthentication": True, "minimumTlsVersion": "TLS1_2",
                       "supportsHttpsTrafficOnly": True}})
    return {"account": p.account}


def _containers(gw: AzureGateway, p: SiloPlan) -> dict:
    for c in CONTAINERS:
        gw.put_resource(p.container_id(c), STORAGE_API, {"properties": {"publicAccess": "None"}})
    return {"containers": list(CONTAINERS)}


def _identity(gw: AzureGateway, p: SiloPlan) -> dict:
    r = gw.put_resource(p.identity_id, MSI_API, {"location": p.aml.location})
    return {"principal_id": r["properties"]["principalId"], "client_id": r["properties"]["clientId"]}


def _compute(gw: AzureGateway, p: SiloPlan) -> dict:
    compute_id = f"{p.workspace_id}/computes/{p.compute}"
    if p.attached:  # other tenant / on-prem: the admin attached it with the silo identity (docs/azure.md)
        found = gw.get_resource(compute_id, ML_API)
        if found is None:
            raise AzureCallError(f"compute: {p.compute!r} is not attached to workspace {p.aml.workspace!r}")
        return {"compute": p.compute, "attached": found.get("properties", {}).get("computeType")}
    gw.put_resource(compute_id, ML_API, {
        "location": p.aml.location,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {p.identity_id: {}}},
        "properties": {"computeType": "AmlCompute", "description": f"FL silo {p.silo}", "properties": {
            "vmSize": p.aml.silo_vm_size, "remoteLoginPortPublicAccess": "Disabled",
            "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 1, "nodeIdleTimeBeforeScaleDown": "PT5M"}}}})
    return {"compute": p.compute}


def _datastores(gw: AzureGateway, p: SiloPlan) -> dict:
    names = []
    for c in CONTAINERS:
        name = naming.datastore(p.silo, c)
        gw.put_resource(f"{p.workspace_id}/datastores/{name}", ML_API, {"properties": {
            "datastoreType": "AzureBlob", "accountName": p.account, "containerName": c,
            "endpoint": "core.windows.net", "protocol": "https",
            "credentials": {"credentialsType": "None"}, "serviceDataAccessAuthIdentity": "None"}})
        names.append(name)
    return {"datastores": names}


def _role_assignments(gw: AzureGateway, p: SiloPlan) -> dict:
    principal = gw.get_resource(p.identity_id, MSI_API)
    if principal is None:
        raise AzureCallError(f"identity {naming.identity(p.silo)} does not exist yet (run the identity step first)")
    done = []
    for g in role_grants(p, principal["properties"]["principalId"]):
        try:
            gw.put_resource(assignment_id(g), AUTH_API, {"properties": {
                "roleDefinitionId": roles.definition_id(p.aml.subscription_id, g.role),
                "principalId": g.principal_id, "principalType": "ServicePrincipal"}})
        except AzureCallError as e:
            if e.code != "RoleAssignmentExists":  # same grant under another name: already in place
                raise
        done.append(g.role)
    return {"role_assignments": len(done)}


def _event_subscriptions(gw: AzureGateway, p: SiloPlan) -> dict:
    gw.put_resource(p.topic_id, EVENTGRID_API, {"location": p.aml.location, "properties": {
        "source": p.account_id, "topicType": "Microsoft.Storage.StorageAccounts"}})
    for sub in SUBSCRIPTIONS:
        subject = {"subjectBeginsWith": sub.subject_begins_with}
        if sub.subject_ends_with:
            subject["subjectEndsWith"] = sub.subject_ends_with
        gw.put_resource(f"{p.topic_id}/eventSubscriptions/{sub.name}", EVENTGRID_API, {"properties": {
            "destination": {"endpointType": "AzureFunction", "properties": {
                "resourceId": f"{p.aml.function_app_id}/functions/{sub.function}",
                "maxEventsPerBatch": 1, "preferredBatchSizeInKilobytes": 64}},
            "filter": {"includedEventTypes": [BLOB_CREATED], **subject},
            "eventDeliverySchema": "EventGridSchema",
            "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}}})
    return {"event_subscriptions": [sub.name for sub in SUBSCRIPTIONS]}


_STEP_FUNCTIONS = {"storage": _storage, "containers": _containers, "identity": _identity, "compute": _compute,
                   "datastores": _datastores, "role_assignments": _role_assignments,
                   "event_subscriptions": _event_subscriptions}


def ensure(gw: AzureGateway, aml: AmlSettings, silo: str, step: str, compute: str | None = None) -> dict:
    """Run one onboarding step for ``silo`` (``step`` in ``STEPS``, in that order); returns a small summary.

    ``compute``: the name of an attached (Arc Kubernetes) compute, or None to create an AmlCompute.
    """
    if step not in _STEP_FUNCTIONS:
        raise ValueError(f"step: {step!r} is not one of {', '.join(STEPS)}")
    return _STEP_FUNCTIONS[step](gw, SiloPlan.for_silo(silo, aml, compute))


def silo_record(aml: AmlSettings, silo: str, trusted_signers: list[str], compute: str | None = None) -> SiloRecord:
    """The registry row for an Azure silo. No SAS: the app reads the outbox with its managed identity."""
    p = SiloPlan.for_silo(silo, aml, compute)
    return SiloRecord(name=silo, account=p.account, blob_url=p.blob_url, compute=p.compute,
                      trusted_signers=trusted_signers,
                      policy_ref=f"{p.blob_url}/{POLICY_CONTAINER}/{POLICY_BLOB}")
