"""Everything fedfunc does on Azure goes through ``AzureGateway`` (fedfunc.azure.gateway).

The AML silo job backend and the Azure onboarding steps build plain job specs and ARM resource
bodies; the gateway is the only code that talks to Azure, so tests replace it and nothing else.
"""
