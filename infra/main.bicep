// The orchestrator side of fedfunc on Azure: the Function App (Flex Consumption, user-assigned
// identity, identity-based storage), its storage, the Azure ML workspace that runs silo jobs,
// Application Insights, Key Vault, the custom roles, and the optional VNet + private endpoints.
// Silos are deployed afterwards with modules/silo.bicep (or the onboard_silo orchestration).
// Nothing here uses or outputs a key: shared-key access is off on every storage account.
var roles = loadJsonContent('roles.json')

@description('Short prefix for resource names (letters and digits).')
@minLength(2)
@maxLength(8)
param prefix string = 'fl'
param location string = resourceGroup().location
@description('VNet + private endpoints for storage, workspace and Key Vault; public network access off.')
param privateNetworking bool = false
@description('Entra ID object ids of data scientists (see docs/azure.md for what they may do).')
param scientistPrincipalIds array = []
@description('Give scientists AzureML Data Scientist on the workspace. That role can submit jobs to any compute, silo computes included, which reopens the compute lock; by default scientists get Reader and start runs through the Function App API.')
param scientistsMaySubmitJobs bool = false
@description('Let the onboard_silo orchestration create silos (grants the app the FL Silo Provisioner role on this resource group).')
param appMayOnboard bool = false
@description('Create the workspace RunStatusChanged subscription to on_job_status. Set true on the second deployment, after the app is published.')
param wireEvents bool = false
@description('Pinned Azure ML environment for silo jobs, name:version.')
param amlEnvironment string = 'fedfunc-silo:1'
@description('Folder in the published app holding the code silo jobs run (python -m fedfunc.azure.package writes it). The app puts it, content-addressed, in its own code container, which silo identities may read; the runner still verifies every task file against the signed bundle.')
param amlCode string = 'aml-code'
param siloVmSize string = 'Standard_DS3_v2'
@description('NCRONTAB schedule (six fields) of scheduled retraining; the timer function needs a valid one to be indexed.')
param retrainSchedule string = '0 0 3 * * *'
@description('Run scheduled retraining (it also needs FEDFUNC_RETRAIN_SPEC, set by the admin).')
param scheduledRetraining bool = false
@description('Client id of the Entra ID app registration for App Service Authentication (docs/azure.md); empty: no built-in authentication.')
param authClientId string = ''

var suffix = uniqueString(resourceGroup().id, prefix)
var storageName = take('${prefix}orch${suffix}', 24)
var workspaceStorageName = take('${prefix}mlws${suffix}', 24)
var functionAppName = '${prefix}-func-${suffix}'
var workspaceName = '${prefix}-mlw-${suffix}'
var deploymentContainer = 'app-package'
// The Ed25519 key that signs job tickets: a Key Vault secret the admin sets (docs/azure.md), read by the
// app through a Key Vault reference with its own identity.
var ticketKeySecret = 'orchestrator-ticket-key'
// models and code are read by every silo job (read-only); runs, evaldata and the app package only by the app.
var orchestratorContainers = [ 'models', 'code', 'runs', 'evaldata', deploymentContainer ]

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  params: {
    prefix: prefix
    location: location
  }
}

resource orchestratorIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${prefix}-orchestrator'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in orchestratorContainers: {
  parent: blobService
  name: c
  properties: { publicAccess: 'None' }
}]

resource workspaceStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: workspaceStorageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${prefix}-kv-${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    softDeleteRetentionInDays: 30
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  name: workspaceName
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    friendlyName: 'Federated learning orchestrator'
    storageAccount: workspaceStorage.id
    keyVault: vault.id
    applicationInsights: insights.id
    systemDatastoresAuthMode: 'identity'
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

// Global models and job code, read by every silo job as its `model` and `code` inputs (identity-based: no
// credentials stored). Job code comes from here, not from AML code assets in the workspace's storage, so
// silo identities need no role there (docs/azure.md, "Silo jobs and workspace storage").
var sharedDatastores = [
  { name: 'fedfunc_models', container: 'models' }
  { name: 'fedfunc_code', container: 'code' }
]

resource orchestratorDatastores 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = [for d in sharedDatastores: {
  parent: workspace
  name: d.name
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storage.name
    containerName: d.container
    endpoint: environment().suffixes.storage
    protocol: 'https'
    credentials: { credentialsType: 'None' }
    serviceDataAccessAuthIdentity: 'None'
  }
  dependsOn: [ containers ]
}]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${prefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${orchestratorIdentity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: orchestratorIdentity.id
    virtualNetworkSubnetId: privateNetworking ? network.outputs.functionsSubnetId : null
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: orchestratorIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
        { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
        { name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: orchestratorIdentity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: orchestratorIdentity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${orchestratorIdentity.properties.clientId};Authorization=AAD' }
        { name: 'FEDFUNC_STORAGE__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
        { name: 'FEDFUNC_STORAGE__tableServiceUri', value: storage.properties.primaryEndpoints.table }
        { name: 'FEDFUNC_JOB_BACKEND', value: 'aml' }
        { name: 'FEDFUNC_AML_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'FEDFUNC_AML_RESOURCE_GROUP', value: resourceGroup().name }
        { name: 'FEDFUNC_AML_WORKSPACE', value: workspace.name }
        { name: 'FEDFUNC_AML_ENVIRONMENT', value: amlEnvironment }
        { name: 'FEDFUNC_AML_CODE', value: amlCode }
        { name: 'FEDFUNC_AML_LOCATION', value: location }
        { name: 'FEDFUNC_AML_ORCHESTRATOR_PRINCIPAL_ID', value: orchestratorIdentity.properties.principalId }
        { name: 'FEDFUNC_AML_ORCHESTRATOR_STORAGE_ID', value: storage.id }
        { name: 'FEDFUNC_AML_FUNCTION_APP_ID', value: resourceId('Microsoft.Web/sites', functionAppName) }
        { name: 'FEDFUNC_AML_MODELS_DATASTORE', value: sharedDatastores[0].name }
        { name: 'FEDFUNC_AML_CODE_DATASTORE', value: sharedDatastores[1].name }
        { name: 'FEDFUNC_AML_SILO_VM_SIZE', value: siloVmSize }
        { name: 'FEDFUNC_AML_SILO_JOBS', value: 'per-round' } // 'per-run': one job per silo per run (docs/azure.md), not verified on Azure yet
        { name: 'FEDFUNC_ORCHESTRATOR_KEY', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${ticketKeySecret})' }
        { name: 'FEDFUNC_RETRAIN_SCHEDULE', value: retrainSchedule }
        { name: 'AzureWebJobs.scheduled_retraining.Disabled', value: scheduledRetraining ? 'false' : 'true' }
      ]
    }
  }
}

// Custom roles: names carry the resource group so two deployments in one tenant do not collide.
resource jobSubmitterRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, roles.custom.JobSubmitter.roleName)
  properties: {
    roleName: '${roles.custom.JobSubmitter.roleName} (${resourceGroup().name})'
    description: roles.custom.JobSubmitter.description
    type: 'CustomRole'
    permissions: [ { actions: roles.custom.JobSubmitter.actions } ]
    assignableScopes: [ resourceGroup().id ]
  }
}

resource siloProvisionerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (appMayOnboard) {
  name: guid(resourceGroup().id, roles.custom.SiloProvisioner.roleName)
  properties: {
    roleName: '${roles.custom.SiloProvisioner.roleName} (${resourceGroup().name})'
    description: roles.custom.SiloProvisioner.description
    type: 'CustomRole'
    permissions: [ { actions: roles.custom.SiloProvisioner.actions } ]
    assignableScopes: [ resourceGroup().id ]
  }
}

// The orchestrator's own storage: the Durable Azure Storage backend needs blob owner, queue and table.
var orchestratorStorageRoles = [
  roles.builtIn.StorageBlobDataOwner
  roles.builtIn.StorageQueueDataContributor
  roles.builtIn.StorageTableDataContributor
]

resource orchestratorOnStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in orchestratorStorageRoles: {
  name: guid(storage.id, orchestratorIdentity.id, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: orchestratorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource orchestratorSubmitsJobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, orchestratorIdentity.id, jobSubmitterRole.id)
  scope: workspace
  properties: {
    roleDefinitionId: jobSubmitterRole.id
    principalId: orchestratorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource orchestratorReadsTicketKey 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, orchestratorIdentity.id, roles.builtIn.KeyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.KeyVaultSecretsUser)
    principalId: orchestratorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights has local (key) auth off, so the app's telemetry must be sent with Entra ID as an
// identity holding Monitoring Metrics Publisher on the component; without it every record is rejected.
resource orchestratorPublishesTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, orchestratorIdentity.id, roles.builtIn.MonitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.MonitoringMetricsPublisher)
    principalId: orchestratorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource orchestratorProvisions 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (appMayOnboard) {
  name: guid(resourceGroup().id, orchestratorIdentity.id, roles.custom.SiloProvisioner.roleName)
  properties: {
    roleDefinitionId: siloProvisionerRole.id
    principalId: orchestratorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource scientistsReadWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in scientistPrincipalIds: if (!scientistsMaySubmitJobs) {
  name: guid(workspace.id, p, roles.builtIn.Reader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.Reader)
    principalId: p
    principalType: 'User'
  }
}]

resource scientistsUseWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in scientistPrincipalIds: if (scientistsMaySubmitJobs) {
  name: guid(workspace.id, p, roles.builtIn.AzureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.AzureMLDataScientist)
    principalId: p
    principalType: 'User'
  }
}]

// A failed or canceled silo job ends that silo's wait at once instead of at the round deadline.
resource jobEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${prefix}-egt-jobs-${suffix}'
  location: location
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource toOnJobStatus 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (wireEvents) {
  parent: jobEvents
  name: 'job-status'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/on_job_status'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [ 'Microsoft.MachineLearningServices.RunStatusChanged' ]
      // Field name as documented for RunStatusChanged's data (runStatus); on_job_status checks it again.
      advancedFilters: [
        { operatorType: 'StringIn', key: 'data.runStatus', values: [ 'Failed', 'Canceled' ] }
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
  }
}

// App Service Authentication (Entra ID) that still lets Event Grid deliver: requests need a signed-in
// identity, except Event Grid's deliveries to the Functions runtime, which carry the function system key
// instead and would otherwise be answered 401 (events lost at the round deadline). The app reads roles
// from X-MS-CLIENT-PRINCIPAL (triggers/auth.py).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [ '/runtime/webhooks/eventgrid' ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${subscription().tenantId}/v2.0'
        }
        validation: { allowedAudiences: [ 'api://${authClientId}' ] }
      }
    }
  }
}

var privateTargets = [
  { name: 'blob', id: storage.id, group: 'blob' }
  { name: 'queue', id: storage.id, group: 'queue' }
  { name: 'table', id: storage.id, group: 'table' }
  { name: 'wsblob', id: workspaceStorage.id, group: 'blob' }
  { name: 'vault', id: vault.id, group: 'vault' }
  { name: 'mlw', id: workspace.id, group: 'amlworkspace' }
]

module endpoints 'modules/private-endpoint.bicep' = [for t in privateTargets: if (privateNetworking) {
  name: 'pe-${prefix}-${t.name}'
  params: {
    name: 'pe-${prefix}-${t.name}'
    location: location
    targetId: t.id
    groupId: t.group
    // Guarded like every read of a conditional module's outputs: ARM evaluates these even when the loop's
    // condition is false, and an unguarded read fails the default deployment (DeploymentNotFound).
    subnetId: privateNetworking ? network.outputs.endpointsSubnetId : ''
    dnsZoneId: privateNetworking ? network.outputs.dnsZoneIds[t.group] : ''
  }
}]

output functionAppName string = functionApp.name
output orchestratorPrincipalId string = orchestratorIdentity.properties.principalId
output orchestratorStorageName string = storage.name
output workspaceName string = workspace.name
output keyVaultName string = vault.name
output endpointsSubnetId string = privateNetworking ? network.outputs.endpointsSubnetId : ''
output computeSubnetId string = privateNetworking ? network.outputs.computeSubnetId : ''
output blobDnsZoneId string = privateNetworking ? network.outputs.dnsZoneIds.blob : ''
