"""Silo job backends behind ``fedfunc.contracts.SiloJobBackend`` / ``SiloProvisioner``.

``local``: processes and Azurite pool accounts; ``aml``: Azure ML command jobs and ARM ensure-steps.
``fedfunc.coordinator.services`` picks one from the settings; nothing else knows which runs.
"""
