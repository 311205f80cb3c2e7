// One private endpoint with its private DNS zone group: used by main.bicep and silo.bicep when
// privateNetworking is on, so every storage / workspace / vault is reached only through the VNet.
@description('Name of the private endpoint.')
param name string
param location string
@description('Resource id of the service behind the endpoint.')
param targetId string
@description('Sub-resource: blob, queue, table, vault or amlworkspace.')
param groupId string
param subnetId string
@description('Private DNS zone that resolves the service name to the endpoint.')
param dnsZoneId string

resource endpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = {
  name: name
  location: location
  properties: {
    subnet: { id: subnetId }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetId
          groupIds: [ groupId ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: groupId
        properties: { privateDnsZoneId: dnsZoneId }
      }
    ]
  }
}
