"""Blob and table clients from a connection setting: keys locally (Azurite), identities on Azure (no keys).

Callers pass a ``Settings``, a ``StorageConnection`` or a plain connection string (e.g. a silo's own
Azurite account); the same code then runs against either.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
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


# A local emulator answers in milliseconds: retry a failed request after ~0.5, 1, 2, 4, 8 s rather than the
# SDK's 15, 18, 24 s (tuned for a throttling cloud service), and do not wait a minute on a dead socket. No
# proxy stands before it: the environment is not read for proxy settings on every request (about a tenth
# of the SDK's CPU time per request).
LOCAL_CLIENT = {"initial_backoff": 0.5, "increment_base": 2, "retry_total": 5, "random_jitter_range": 0.2,
                "retry_backoff_factor": 0.5, "connection_timeout": 5, "read_timeout": 30, "use_env_settings": False}
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def client_options(url_or_connection: str) -> dict:
    """Client keyword arguments for an endpoint: quick retries and no proxy for a local emulator, SDK defaults
    on Azure."""
    text = url_or_connection or ""
    hosts = [urlsplit(part.split("=", 1)[1]).hostname for part in text.split(";") if "Endpoint=" in part] \
        if ";" in text else [urlsplit(text).hostname]
    return dict(LOCAL_CLIENT) if hosts and all(h in _LOCAL_HOSTS for h in hosts) else {}


def blob_service(c: Connection) -> BlobServiceClient:
    s = _conn(c)
    if s.connection_string:
        return BlobServiceClient.from_connection_string(s.connection_string, **client_options(s.connection_string))
    return BlobServiceClient(s.blob_service_uri, credential=credential())


def table_service(c: Connection) -> TableServiceClient:
    s = _conn(c)
    if s.connection_string:
        return TableServiceClient.from_connection_string(s.connection_string, **client_options(s.connection_string))
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
    """A ``contracts.BlobRange`` over one blob: its size and ETag from the first request, then range reads
    the service refuses (412, ``ResourceModifiedError``) if the blob changed since — so every block read
    comes from the bytes that were opened.

    The first request is a properties request, or with ``head`` a read of the blob's first ``head`` bytes,
    kept: a small blob whole, or a large one's header, in one round trip instead of two."""

    def __init__(self, blob: BlobClient, head: int = 0):
        self._blob, self._head = blob, b""
        if head > 0:
            try:
                stream = blob.download_blob(offset=0, length=head)
            except HttpResponseError as e:
                if e.error_code != "InvalidRange":  # an empty blob has no first byte to read
                    raise
            else:
                self._head, props = stream.readall(), stream.properties
                self.size, self.version = int(props.content_range.rsplit("/", 1)[1]), props.etag
                return
        props = blob.get_blob_properties()
        self.size, self.version = props.size, props.etag

    def read(self, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        if offset + length <= len(self._head):
            return self._head[offset:offset + length]
        return self._blob.download_blob(offset=offset, length=length, etag=self.version,
                                        match_condition=MatchConditions.IfNotModified).readall()
