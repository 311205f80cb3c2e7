"""Where a silo job reads and writes: the silo's own storage account (local) or AML-mounted folders.

Both give the runner the same five things: its data (a ``DataSource`` the task's reader reads), the global
model, the signed task bundle, its policy, and its outbox.
The outbox is create-only: a blob is written once; writing the same bytes again (a re-run of the same
job) is a no-op, writing different bytes is refused, so nothing already published is ever replaced.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.security.policy import POLICY_BLOB, POLICY_CONTAINER
from fedfunc.silo.sources import BlobDataSource, DirDataSource
from fedfunc.storage import blob_service, client_options
from fedfunc.tasks.data import DataSource


class OutboxConflict(RuntimeError):
    """The outbox already holds different bytes under this name."""


def _same_bytes(existing: bytes, new: bytes, name: str) -> None:
    if hashlib.sha256(existing).digest() != hashlib.sha256(new).digest():
        raise OutboxConflict(f"outbox already holds a different {name}; refusing to overwrite it")


class Outbox(Protocol):
    def create(self, path: str, data: bytes) -> None: ...
    def read(self, path: str) -> bytes | None: ...
    def append_line(self, path: str, line: str) -> None: ...


class SiloIO(Protocol):
    outbox: Outbox
    data: DataSource
    def read_model(self, request: SiloJobRequest) -> bytes: ...
    def read_bundle(self, code_hash: str, max_bytes: int) -> bytes: ...
    def read_policy(self) -> bytes | None: ...


def _bounded(data: bytes, max_bytes: int, what: str) -> bytes:
    if len(data) > max_bytes:
        raise ValueError(f"{what} is over the {max_bytes}-byte bound")
    return data


class BlobOutbox:
    def __init__(self, container: ContainerClient):
        self.container = container

    def create(self, path: str, data: bytes) -> None:
        blob = self.container.get_blob_client(path)
        try:
            blob.upload_blob(data, overwrite=False)
        except ResourceExistsError:
            _same_bytes(blob.download_blob().readall(), data, path)

    def read(self, path: str) -> bytes | None:
        try:
            return self.container.get_blob_client(path).download_blob().readall()
        except ResourceNotFoundError:
            return None

    def append_line(self, path: str, line: str) -> None:
        blob = self.container.get_blob_client(path)
        try:
            blob.create_append_blob(if_none_match="*")
        except ResourceExistsError:
            pass
        blob.append_block((line.rstrip("\n") + "\n").encode())


DATA_CACHE = "data-cache"  # in a local silo's home: its own data, kept between rounds (keyed by ETag)


class BlobSiloIO:
    """A local silo job: the silo's own account via its connection string; the model and the bundles via
    read-only SAS URLs of the orchestrator's containers (``bundles_url`` names the container, so the
    orchestrator cannot point a job at a bundle anywhere else)."""

    def __init__(self, connection_string: str, models_sas: str, bundles_url: str | None = None,
                 data_cache: Path | None = None):
        self.service = blob_service(connection_string)
        self.models_sas, self.bundles_url = models_sas, bundles_url
        self.outbox = BlobOutbox(self.service.get_container_client(layout.OUTBOX))
        self.data = BlobDataSource(self.service.get_container_client(layout.DATA), data_cache)

    @classmethod
    def of(cls, creds, data_cache: Path | None = None) -> BlobSiloIO:
        """From a local silo's ``SiloCredentials``; ``data_cache``: a folder of the silo's own home."""
        return cls(creds.connection_string, creds.models_sas, creds.bundles_url, data_cache)

    @classmethod
    def from_home(cls, home: Path) -> BlobSiloIO:
        """The silo's storage with the credentials in its home (``fedfunc.silo.home``), its data cached there
        between rounds (``DATA_CACHE``, keyed by ETag)."""
        from fedfunc.silo.home import read_credentials

        return cls.of(read_credentials(home), data_cache=home / DATA_CACHE)

    def read_model(self, request: SiloJobRequest) -> bytes:
        url = request.model_url if "?" in request.model_url else f"{request.model_url}?{self.models_sas}"
        return BlobClient.from_blob_url(url, **client_options(url)).download_blob().readall()

    def read_bundle(self, code_hash: str, max_bytes: int) -> bytes:
        if not self.bundles_url:
            raise FileNotFoundError("this silo's credentials name no bundles container; re-onboard the silo")
        base, _, sas = self.bundles_url.partition("?")
        url = f"{base}/{layout.bundle(code_hash)}?{sas}"
        blob = BlobClient.from_blob_url(url, **client_options(url))
        try:
            data = blob.download_blob(offset=0, length=max_bytes + 1).readall()
        except ResourceNotFoundError:
            raise FileNotFoundError(f"bundle {code_hash[:16]} is not in the orchestrator's bundles") from None
        return _bounded(data, max_bytes, f"bundle {code_hash[:16]}")

    def read_policy(self) -> bytes | None:
        try:
            return self.service.get_blob_client(POLICY_CONTAINER, POLICY_BLOB).download_blob().readall()
        except ResourceNotFoundError:
            return None


class DirOutbox:
    """The outbox container mounted read-write as a folder (AML ``rw_mount``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def create(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "xb") as f:
                f.write(data)
        except FileExistsError:
            _same_bytes(target.read_bytes(), data, path)

    def read(self, path: str) -> bytes | None:
        target = self.root / path
        return target.read_bytes() if target.is_file() else None

    def append_line(self, path: str, line: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as f:
            f.write(line.rstrip("\n") + "\n")


class MountedSiloIO:
    """An AML silo job: data container, model file, bundle file, policy file and outbox mounted by AML."""

    def __init__(self, data: Path, model: Path, outbox: Path, policy: Path | None, bundle: Path | None = None):
        self.data_dir, self.model, self.policy, self.bundle = Path(data), Path(model), policy, bundle
        self.data = DirDataSource(self.data_dir)
        self.outbox = DirOutbox(outbox)

    def read_bundle(self, code_hash: str, max_bytes: int) -> bytes:
        if self.bundle is None or not Path(self.bundle).is_file():
            raise FileNotFoundError(f"bundle {code_hash[:16]} was not mounted (--bundle)")
        with open(self.bundle, "rb") as f:
            return _bounded(f.read(max_bytes + 1), max_bytes, f"bundle {code_hash[:16]}")

    def read_model(self, request: SiloJobRequest) -> bytes:
        return self.model.read_bytes()

    def read_policy(self) -> bytes | None:
        return self.policy.read_bytes() if self.policy and self.policy.is_file() else None


class RunJobSiloIO(MountedSiloIO):
    """A silo's long-lived AML job (``fedfunc.silo.serve``): data, policy, outbox and the run's bundle mounted
    as for a per-round job; each round's global model read from its URL (the job's identity, or a SAS in the URL),
    since a job's inputs are fixed when it starts. The runner still checks the bytes against the pin."""

    def __init__(self, data: Path, outbox: Path, policy: Path | None, bundle: Path | None = None, credential=None):
        super().__init__(data, data, outbox, policy, bundle)
        self.credential = credential

    def read_model(self, request: SiloJobRequest) -> bytes:
        credential = None if "?" in request.model_url else self.credential
        return BlobClient.from_blob_url(request.model_url, credential=credential).download_blob().readall()
