"""Blob and table clients from a connection setting: keys locally (Azurite), identities on Azure (no keys).

Callers pass a ``Settings``, a ``StorageConnection`` or a plain connection string (e.g. a silo's own
Azurite account); the same code then runs against either.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache

from azure.core import MatchConditions
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

from fedfunc.settings import Settings, StorageConnection

Connection = Settings | StorageConnection | str


@lru_cache(maxsize=1)
def credential():
    """One ``DefaultAzureCredential`` per process so tokens are cached (managed identity on Azure)."""
    from azure.identity import DefaultAzureCredential
    return DefaultAzureCredential()


def _conn(c: Connection) -> StorageConnection:
    if isinstance(c, Settings):
        return c.storage
    if isinstance(c, str):
        return StorageConnection(connection_string=c)
    return c


def blob_service(c: Connection) -> BlobServiceClient:
    s = _conn(c)
    if s.connection_string:
        return BlobServiceClient.from_connection_string(s.connection_string)
    return BlobServiceClient(s.blob_service_uri, credential=credential())


def table_service(c: Connection) -> TableServiceClient:
    s = _conn(c)
    if s.connection_string:
        return TableServiceClient.from_connection_string(s.connection_string)
    return TableServiceClient(s.table_service_uri, credential=credential())


def read_url_for(blob: BlobClient, ttl: timedelta = timedelta(hours=2)) -> str:
    """A URL a silo job can read the blob from.

    With an account key (local): a read-only SAS limited to this blob and ``ttl``. On Azure (token
    credential) the plain URL: the reader's managed identity has RBAC on the container, and no key exists.
    """
    key = getattr(blob.credential, "account_key", None)
    if key is None:
        return blob.url
    now = datetime.now(timezone.utc)
    sas = generate_blob_sas(
        account_name=blob.account_name, container_name=blob.container_name, blob_name=blob.blob_name,
        account_key=key, permission=BlobSasPermissions(read=True),
        start=now - timedelta(minutes=5), expiry=now + ttl)
    return f"{blob.url}?{sas}"


class PinnedBlob:
    """A ``contracts.BlobRange`` over one blob: its size and ETag from one properties request, then range
    reads the service refuses (412, ``ResourceModifiedError``) if the blob changed since — so every block
    read comes from the bytes that were opened."""

    def __init__(self, blob: BlobClient):
        props = blob.get_blob_properties()
        self._blob, self.size, self.version = blob, props.size, props.etag

    def read(self, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        return self._blob.download_blob(offset=offset, length=length, etag=self.version,
                                        match_condition=MatchConditions.IfNotModified).readall()
