// The VNet switch: a VNet with subnets for the Function App, private endpoints and silo computes,
// plus the private DNS zones the endpoints register in. Deployed only when privateNetworking is on.
param prefix string
param location string
param addressSpace string = '10.40.0.0/16'

var zoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  queue: 'privatelink.queue.${environment().suffixes.storage}'
  table: 'privatelink.table.${environment().suffixes.storage}'
  vault: 'privatelink.vaultcore.azure.net'
  amlworkspace: 'privatelink.api.azureml.ms'
  notebooks: 'privatelink.notebooks.azure.net'
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: 'vnet-${prefix}'
  location: location
  properties: {
    addressSpace: { addressPrefixes: [ addressSpace ] }
    subnets: [
      {
        name: 'functions'
        properties: {
          addressPrefix: cidrSubnet(addressSpace, 24, 0)
          delegations: [ { name: 'flex', properties: { serviceName: 'Microsoft.App/environments' } } ]
        }
      }
      {
        name: 'endpoints'
        properties: { addressPrefix: cidrSubnet(addressSpace, 24, 1) }
      }
      {
        name: 'compute'
        properties: { addressPrefix: cidrSubnet(addressSpace, 22, 1) }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for z in items(zoneNames): {
  name: z.value
  location: 'global'
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (z, i) in items(zoneNames): {
  parent: zones[i]
  name: 'vnet-${prefix}'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

output functionsSubnetId string = vnet.properties.subnets[0].id
output endpointsSubnetId string = vnet.properties.subnets[1].id
output computeSubnetId string = vnet.properties.subnets[2].id
output dnsZoneIds object = toObject(items(zoneNames), z => z.key, z => resourceId('Microsoft.Network/privateDnsZones', z.value))
