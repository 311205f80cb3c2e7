"""Local silos: an Azurite pool account each, keys kept in the silo's home, events from the host's watcher.

Stands in for the silo owner and the platform admin on one machine: the orchestrator gets a read+list SAS
on the silo's outbox (tied to a stored access policy, so releasing the silo revokes it) and the local
Event Grid subscriptions a deployment's system topics would give it.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from fedfunc import layout
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.registry import SiloRecord
from fedfunc.security.policy import SiloPolicy
from fedfunc.settings import Settings

OUTBOX_EVENTS = f"/blobServices/default/containers/{layout.OUTBOX}/blobs/runs/"
LOCAL_COMPUTE = "local"


def subscription_name(silo: str, container: str = layout.OUTBOX) -> str:
    return f"{container}-{silo}"


class LocalProvisioner:
    """``SiloProvisioner`` over Azurite's account pool; ``orchestrator_key()`` is the ticket key (base64 public)."""

    def __init__(self, settings: Settings, orchestrator_key: Callable[[], str], jobs: LocalProcessBackend):
        self.settings, self.orchestrator_key, self.jobs = settings, orchestrator_key, jobs

    def check_compute(self, compute: str) -> None:
        if compute != LOCAL_COMPUTE:
            raise ValueError(f"compute: {compute!r} — the local backend runs silos on compute {LOCAL_COMPUTE!r}")

    @property
    def _azurite_home(self):
        if self.settings.azurite_home is None:
            raise ValueError("FEDFUNC_AZURITE_HOME: missing; local onboarding claims accounts from Azurite's pool")
        return self.settings.azurite_home

    def provision(self, name: str, compute: str, policy: dict) -> SiloRecord:
        from fedfunc.silo.local import provision_local_silo

        initial = SiloPolicy(silo=name, orchestrator_keys=[self.orchestrator_key()], **policy)
        return provision_local_silo(name, azurite_home=self._azurite_home,
                                    orchestrator_conn=self.settings.storage.connection_string,
                                    home_root=self.settings.local_home, initial_policy=initial, compute=compute)

    def grant(self, record: SiloRecord) -> dict:
        from fedfunc.host.subscriptions import put_subscription

        put_subscription(subscription_name(record.name), "on_update", f"{record.blob_url}?{record.outbox_read_sas}",
                         layout.OUTBOX, subject_begins_with=OUTBOX_EVENTS)
        put_subscription(subscription_name(record.name, layout.DATA), "on_data_uploaded",
                         self._data_events_connection(record), layout.DATA)
        return {"event_subscriptions": [subscription_name(record.name), subscription_name(record.name, layout.DATA)]}

    def _data_events_connection(self, record: SiloRecord) -> str:
        """A list-only SAS on the silo's ``data`` for the emulated Event Grid (names and sizes, never contents).

        On Azure the storage account's system topic publishes these events itself; locally the host's
        watcher stands in for it, and onboarding (the platform admin who created the account) hands it this.
        """
        from fedfunc.azurite import read_accounts

        account = read_accounts(self._azurite_home)[record.account]
        now = datetime.now(timezone.utc)
        sas = generate_container_sas(account.name, layout.DATA, account_key=account.key,
                                     permission=ContainerSasPermissions(list=True),
                                     start=now - timedelta(minutes=5), expiry=now + timedelta(days=365))
        return f"{record.blob_url}?{sas}"

    def smoke(self, record: SiloRecord, smoke_id: str) -> dict:
        return self.jobs.smoke(record.name, smoke_id)

    def release(self, name: str, *, storage: bool) -> None:
        from fedfunc.host.subscriptions import delete_subscription

        for container in (layout.OUTBOX, layout.DATA):
            delete_subscription(subscription_name(name, container))
        if storage:
            from fedfunc.silo.local import release_local_silo

            release_local_silo(name, azurite_home=self._azurite_home,
                               orchestrator_conn=self.settings.storage.connection_string,
                               home_root=self.settings.local_home)
