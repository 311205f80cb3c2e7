// One silo: its own storage (data, outbox, policy; shared-key access off), a compute whose user-assigned
// identity is the only principal that can read the silo's data, identity-based datastores, the role
// assignments of the security table in DESIGN.md, and Event Grid wiring from the outbox to on_update and
// from the data container (the owner's uploads) to on_data_uploaded.
// Deploy after the Function App is published (Event Grid validates the function endpoint).
var roles = loadJsonContent('../roles.json')

@description('Silo name as in the silo registry: lowercase letters, digits, hyphens.')
@minLength(3)
@maxLength(24)
param siloName string
param location string = resourceGroup().location
@description('The FL Azure ML workspace (orchestrator).')
param workspaceName string
@description('Globally unique storage account name for this silo.')
@minLength(3)
@maxLength(24)
param storageAccountName string
@description('Name of the AmlCompute cluster (or of the attached Arc Kubernetes compute, see docs/azure.md).')
param computeName string
param vmSize string = 'Standard_DS3_v2'
param maxNodes int = 1
@description('Object id of the orchestrator (Function App) identity: it may read this outbox, nothing else here.')
param orchestratorPrincipalId string
@description('The orchestrator storage account, whose models and code containers this silo may read.')
param orchestratorStorageName string
@description('Resource id of the Function App that hosts on_update.')
param functionAppId string
param privateNetworking bool = false
param endpointsSubnetId string = ''
param computeSubnetId string = ''
param blobDnsZoneId string = ''

var datastorePrefix = replace(siloName, '-', '_')

resource siloIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-fl-${siloName}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
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
      bypass: 'None'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource dataContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'data'
  properties: { publicAccess: 'None' }
}

resource outboxContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'outbox'
  properties: { publicAccess: 'None' }
}

// The silo owner's policy (trusted signers, allowed tasks, privacy floor): the silo job reads it,
// the orchestrator cannot touch it.
resource policyContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'policy'
  properties: { publicAccess: 'None' }
}

resource orchestratorStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: orchestratorStorageName
}

resource orchestratorBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: orchestratorStorage
  name: 'default'
}

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: orchestratorBlobs
  name: 'models'
}

// The job code silo jobs run (content-addressed, written only by the app): read here, not from AML code
// assets in the workspace's storage, where this identity has no role (docs/azure.md).
resource codeContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: orchestratorBlobs
  name: 'code'
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspace
  name: computeName
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${siloIdentity.id}': {} }
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'FL silo ${siloName}'
    properties: {
      vmSize: vmSize
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: maxNodes
        nodeIdleTimeBeforeScaleDown: 'PT5M'
      }
      remoteLoginPortPublicAccess: 'Disabled'
      enableNodePublicIp: !privateNetworking
      subnet: privateNetworking ? { id: computeSubnetId } : null
    }
  }
}

var siloContainers = [ 'data', 'outbox', 'policy' ]

resource datastores 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = [for c in siloContainers: {
  parent: workspace
  name: '${datastorePrefix}_${c}'
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storage.name
    containerName: c
    endpoint: environment().suffixes.storage
    protocol: 'https'
    credentials: { credentialsType: 'None' }
    serviceDataAccessAuthIdentity: 'None'
  }
  dependsOn: [ dataContainer, outboxContainer, policyContainer ]
}]

// The security table: the silo identity reads its data and policy, writes its outbox, reads global models
// and job code; the orchestrator reads this outbox and nothing else in this silo.
resource siloReadsData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataContainer.id, siloIdentity.id, roles.builtIn.StorageBlobDataReader)
  scope: dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: siloIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource siloReadsPolicy 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(policyContainer.id, siloIdentity.id, roles.builtIn.StorageBlobDataReader)
  scope: policyContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: siloIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource siloWritesOutbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outboxContainer.id, siloIdentity.id, roles.builtIn.StorageBlobDataContributor)
  scope: outboxContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataContributor)
    principalId: siloIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource siloReadsModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, siloIdentity.id, roles.builtIn.StorageBlobDataReader)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: siloIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource siloReadsCode 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(codeContainer.id, siloIdentity.id, roles.builtIn.StorageBlobDataReader)
  scope: codeContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: siloIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource orchestratorReadsOutbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outboxContainer.id, orchestratorPrincipalId, roles.builtIn.StorageBlobDataReader)
  scope: outboxContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.builtIn.StorageBlobDataReader)
    principalId: orchestratorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource storageEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'egt-fl-${siloName}'
  location: location
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Updates and failure notes go to on_update, the owner's data uploads to on_data_uploaded (retraining);
// subject filters keep everything else out. fedfunc.azure.onboarding creates the same three.
var eventSubscriptions = [
  { name: 'outbox-updates', function: 'on_update', beginsWith: '/blobServices/default/containers/outbox/blobs/runs/', endsWith: '.safetensors' }
  { name: 'outbox-failures', function: 'on_update', beginsWith: '/blobServices/default/containers/outbox/blobs/runs/', endsWith: '/failed.json' }
  { name: 'data-uploads', function: 'on_data_uploaded', beginsWith: '/blobServices/default/containers/data/blobs/', endsWith: '' }
]

resource toFunctions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [for s in eventSubscriptions: {
  parent: storageEvents
  name: s.name
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${s.function}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: union({
      includedEventTypes: [ 'Microsoft.Storage.BlobCreated' ]
      subjectBeginsWith: s.beginsWith
    }, empty(s.endsWith) ? {} : { subjectEndsWith: s.endsWith })
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}]

module blobEndpoint 'private-endpoint.bicep' = if (privateNetworking) {
  name: 'pe-${storageAccountName}-blob'
  params: {
    name: 'pe-${storageAccountName}-blob'
    location: location
    targetId: storage.id
    groupId: 'blob'
    subnetId: endpointsSubnetId
    dnsZoneId: blobDnsZoneId
  }
}

output identityPrincipalId string = siloIdentity.properties.principalId
output identityClientId string = siloIdentity.properties.clientId
output storageAccountName string = storage.name
output blobUrl string = storage.properties.primaryEndpoints.blob
output computeName string = compute.name
output datastores array = [for (c, i) in siloContainers: datastores[i].name]
