"""Azure silos: ARM/AML ensure-steps (``fedfunc.azure.onboarding``) and an AML smoke job on the silo's compute."""
from __future__ import annotations

import json

from fedfunc import layout
from fedfunc.backends.aml import AmlSiloJobBackend
from fedfunc.contracts import OutboxReader
from fedfunc.registry import SiloRecord
from fedfunc.settings import Settings
from fedfunc.silo.smoke import smoke_report

PROVISION_STEPS = ("storage", "containers", "identity", "compute", "datastores")
GRANT_STEPS = ("role_assignments", "event_subscriptions")
MAX_SMOKE_REPORT = 64 * 1024


class AzureProvisioner:
    """``SiloProvisioner`` over the one Azure gateway; the silo's own storage, identity and compute."""

    def __init__(self, gateway, settings: Settings, jobs: AmlSiloJobBackend, read_outbox: OutboxReader):
        self.gateway, self.settings, self.jobs, self.read_outbox = gateway, settings, jobs, read_outbox

    def check_compute(self, compute: str) -> None:
        if compute == "local":
            raise ValueError("compute: 'local' — the aml backend needs an AML compute name")

    def provision(self, name: str, compute: str, policy: dict) -> SiloRecord:
        from fedfunc.azure.onboarding import ensure, silo_record

        for step in PROVISION_STEPS:
            ensure(self.gateway, self.settings.aml, name, step, compute=compute)
        return silo_record(self.settings.aml, name, policy.get("trusted_signers", []), compute=compute)

    def grant(self, record: SiloRecord) -> dict:
        from fedfunc.azure.onboarding import ensure

        return {step: ensure(self.gateway, self.settings.aml, record.name, step, compute=record.compute)
                for step in GRANT_STEPS}

    def smoke(self, record: SiloRecord, smoke_id: str) -> dict:
        """The verdict is the report the job wrote to the silo's outbox, read with the app's identity."""
        models_url = f"{self.settings.storage.blob_service_uri}/{layout.MODELS}"
        job = self.jobs.smoke(record.name, smoke_id, models_url)
        try:
            result = json.loads(self.read_outbox(record.name, smoke_report(smoke_id), MAX_SMOKE_REPORT))
        except Exception as e:  # no verdict: the job failed before writing it
            result = {"ok": False, "checks": {}, "reason": f"smoke job {job['job']} {job['status']}: "
                                                          f"no report ({type(e).__name__})"}
        result["ok"] = job["ok"] and all(result.get("checks", {}).values()) and bool(result.get("checks"))
        return result

    def release(self, name: str, *, storage: bool) -> None:
        """Nothing to undo here: Azure resources stay with the silo owner (remove them with ARM)."""
