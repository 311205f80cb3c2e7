"""The orchestrator's backends, built once per process from validated settings.

Only this module chooses implementations: ``FEDFUNC_JOB_BACKEND`` picks local silos (processes and
Azurite pool accounts) or Azure (ML jobs and ARM ensure-steps), once, in ``_silo_backends``; the storage
setting picks Azurite keys or managed identity. Orchestrations, activities and triggers never see the choice.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfunc import layout
from fedfunc.contracts import OutboxOpener, OutboxReader, SiloJobBackend, SiloProvisioner
from fedfunc.coordinator.store import RunStore
from fedfunc.observe.delivery import Observer
from fedfunc.observe.outbox import ObservationOutbox
from fedfunc.registry import SiloRecord, SiloRegistry
from fedfunc.security.audit import AuditLog
from fedfunc.security.keys import load_private, public_b64
from fedfunc.settings import Settings, SettingsError, load_settings
from fedfunc.storage import PinnedBlob, blob_service, client_options, credential, table_service


OUTBOX_HEAD = 64 << 10  # bytes of an update read when it is opened: a small model's update whole, in one request


@dataclass(frozen=True)
class OutboxAccess:
    """One activity's way into the silos' outboxes: ``read`` a small blob whole, ``open`` one for range reads."""

    read: OutboxReader
    open: OutboxOpener


@dataclass(frozen=True)
class OutboxBlob:
    """What the orchestrator sees of a blob in a silo's outbox: enough to tell it from another version."""

    etag: str  # without quotes, as Event Grid's ``eTag`` carries it
    size: int


@dataclass
class Services:
    settings: Settings

    @cached_property
    def store(self) -> RunStore:
        return RunStore(blob_service(self.settings))

    @cached_property
    def registry(self) -> SiloRegistry:
        return SiloRegistry.create(table_service(self.settings))

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog.create(table_service(self.settings))

    @cached_property
    def ticket_key(self) -> Ed25519PrivateKey:
        if not self.settings.orchestrator_key:
            raise SettingsError("FEDFUNC_ORCHESTRATOR_KEY: missing; silos run only jobs with a ticket signed by it")
        return load_private(self.settings.orchestrator_key)

    @cached_property
    def azure_gateway(self):
        """The one narrow gateway to Azure (AML jobs, ARM ensure-steps); only with ``FEDFUNC_JOB_BACKEND=aml``."""
        from fedfunc.azure.gateway import AzureMLGateway
        return AzureMLGateway.from_settings(self.settings)

    @cached_property
    def backend(self) -> SiloJobBackend:
        return self._silo_backends[0]

    @cached_property
    def provisioner(self) -> SiloProvisioner:
        return self._silo_backends[1]

    @cached_property
    def _silo_backends(self) -> tuple[SiloJobBackend, SiloProvisioner]:
        """The one place that chooses between local silos and Azure silos."""
        if self.settings.job_backend == "aml":
            from fedfunc.backends.aml import backend_from_settings
            from fedfunc.backends.azure_provisioner import AzureProvisioner
            jobs = backend_from_settings(self.settings)
            return jobs, AzureProvisioner(self.azure_gateway, self.settings, jobs, self.outbox_reader())
        from fedfunc.backends.local import LocalProcessBackend
        from fedfunc.backends.local_provisioner import LocalProvisioner
        jobs = LocalProcessBackend(self.settings.local_home, workers=self.settings.local_workers)
        return jobs, LocalProvisioner(self.settings, lambda: public_b64(self.ticket_key.public_key()), jobs)

    @cached_property
    def observer(self) -> Observer:
        """Facts of runs and silos for MLflow and Event Grid subscribers: the topic's key locally, the
        app's identity on Azure; a sink without its setting is off."""
        from fedfunc.observe.mlflow_tracker import MlflowTracker
        from fedfunc.observe.publisher import EventGridPublisher

        s = self.settings
        events = None
        if s.events_endpoint:
            cred = AzureKeyCredential(s.events_key) if s.events_key else credential()
            events = EventGridPublisher(s.events_url, cred)
        tracking = MlflowTracker(s.tracking_uri, s.mlflow_experiment, self.store) if s.tracking_uri else None
        return Observer(ObservationOutbox.create(table_service(s)), events=events, tracking=tracking, source=s.events_source)

    def outbox(self, record: SiloRecord) -> ContainerClient:
        """Read access to one silo's outbox: a read+list SAS locally, the app's managed identity on Azure.
        One client per (account, credential), kept, so rounds reuse its connections; a silo onboarded
        again (a new SAS) gets a new one."""
        key = (record.blob_url, record.outbox_read_sas)
        if key not in self._outboxes:
            self._outboxes[key] = ContainerClient(record.blob_url, layout.OUTBOX,
                                                  credential=record.outbox_read_sas or credential(),
                                                  **client_options(record.blob_url))
        return self._outboxes[key]

    @cached_property
    def _outboxes(self) -> dict[tuple[str, str | None], ContainerClient]:
        return {}

    def outbox_blob(self, record: SiloRecord, path: str) -> OutboxBlob | None:
        """The etag and size of ``path`` in the silo's own outbox, or None if no such blob exists (an event
        naming it is then not proof of anything). Other storage errors raise, so the event that asked is
        delivered again."""
        try:
            props = self.outbox(record).get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return OutboxBlob(etag=props.etag.strip('"'), size=props.size)

    @cached_property
    def _lister(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(2, thread_name_prefix="registry")

    def outbox_access(self) -> OutboxAccess:
        """Reading and opening blobs in silos' own outboxes, for one activity (any thread). The registry
        is listed once, one query for every silo, started here in the background so that its round trip
        overlaps the activity's own first reads; each silo's container client is made once."""
        listing = self._lister.submit(lambda: {r.name: r for r in self.registry.list()})
        outboxes: dict[str, ContainerClient] = {}

        def client(silo: str) -> ContainerClient:
            if silo not in outboxes:
                outboxes[silo] = self.outbox(listing.result().get(silo) or self.registry.get(silo))
            return outboxes[silo]

        def read(silo: str, path: str, max_bytes: int) -> bytes:
            data = client(silo).get_blob_client(path).download_blob(offset=0, length=max_bytes + 1).readall()
            if len(data) > max_bytes:
                raise ValueError(f"size: {path} is over the {max_bytes}-byte bound")
            return data
        return OutboxAccess(read=read, open=lambda silo, path: PinnedBlob(client(silo).get_blob_client(path),
                                                                          head=OUTBOX_HEAD))

    def outbox_reader(self) -> OutboxReader:
        """``read(silo, path, max_bytes)``: a blob in a silo's outbox in one request, never past the bound."""
        return self.outbox_access().read


@lru_cache(maxsize=1)
def services() -> Services:
    return Services(load_settings(os.environ))
