"""The storage watcher: new or changed blobs in subscribed containers become `Microsoft.Storage.BlobCreated`
events (Event Grid schema), each blob version exactly once, also across restarts (seen ETags are stored).

Listing every container often burns CPU for nothing; listing rarely makes events late. So the watcher
lists when storage tells it something changed: given the folder where Azurite keeps its data, it
watches it with inotify (Azurite writes a blob's bytes to its extent files before it answers the
upload) and lists at once, then once more shortly after (the listing can race Azurite's metadata
commit). A slow safety poll covers what a folder cannot show (storage elsewhere, block-list commits,
no inotify on this system).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlparse

from azure.storage.blob import BlobServiceClient

from fedfunc.host import events as ev

log = logging.getLogger("fedfunc.host")

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/{}"
SUBJECT = "/blobServices/default/containers/{}/blobs/{}"
FOLLOW_UP = 0.05  # seconds after a change: one more listing, in case the first raced the commit
SETTLE = 0.003  # a change comes as a burst of file events: gather it before listing


class SubscriptionError(ValueError):
    """A subscription spec that cannot work; the message names the field."""


def blob_service(connection: str) -> BlobServiceClient:
    try:
        if connection.startswith(("http://", "https://")):
            return BlobServiceClient(account_url=connection)
        return BlobServiceClient.from_connection_string(connection)
    except ValueError as exc:
        raise SubscriptionError(f"field 'connection': not a storage connection string or account URL: {exc}") from exc


def account_name(client: BlobServiceClient) -> str:
    if client.account_name:
        return client.account_name
    parsed = urlparse(client.url)
    return parsed.path.strip("/").split("/")[0] or parsed.hostname.split(".")[0]


def blob_created_event(client: BlobServiceClient, container: str, blob) -> dict:
    endpoint = client.primary_endpoint.split("?")[0].rstrip("/")
    return {
        "id": str(uuid.uuid4()),
        "topic": TOPIC.format(account_name(client)),
        "subject": SUBJECT.format(container, blob.name),
        "eventType": BLOB_CREATED,
        "eventTime": ev.iso(ev.utcnow()),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {"api": "PutBlob", "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
                 "eTag": blob.etag, "contentType": blob.content_settings.content_type,
                 "contentLength": blob.size, "blobType": "BlockBlob",
                 "url": f"{endpoint}/{container}/{quote(blob.name)}",
                 "sequencer": f"{time.time_ns():032x}", "storageDiagnostics": {"batchId": str(uuid.uuid4())}},
    }


class FolderWatch:
    """inotify on a folder tree, read on the event loop (no thread, no CPU while nothing changes)."""

    def __init__(self, roots: tuple[Path, ...], on_change: Callable[[], None]):
        from inotify_simple import INotify, flags
        self.flags = flags
        self.mask = flags.MODIFY | flags.CLOSE_WRITE | flags.CREATE | flags.DELETE | flags.MOVED_TO
        self.inotify = INotify(nonblocking=True)
        self.on_change = on_change
        self.paths: dict[int, Path] = {}  # watch descriptor → folder
        for root in roots:
            Path(root).mkdir(parents=True, exist_ok=True)
            self._add_tree(Path(root))
        asyncio.get_running_loop().add_reader(self.inotify.fileno(), self._read)

    def _add_tree(self, root: Path) -> None:
        for folder, _, _ in os.walk(root):
            self.paths[self.inotify.add_watch(folder, self.mask)] = Path(folder)

    def _read(self) -> None:
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return
        for e in events:
            if e.mask & self.flags.CREATE and e.mask & self.flags.ISDIR and e.wd in self.paths:
                self._add_tree(self.paths[e.wd] / e.name)
        if events:
            self.on_change()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.inotify.fileno())
        self.inotify.close()


class StorageWatcher:
    """Runs `poll` (a blocking listing of every subscribed container) when storage changed, else
    every `safety_interval` seconds; polls never overlap."""

    def __init__(self, poll: Callable[[], int], safety_interval: float, watch: tuple[Path, ...] = ()):
        self.poll, self.safety_interval, self.watch = poll, safety_interval, watch
        self._changed = asyncio.Event()
        self._folders: FolderWatch | None = None

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        if self.watch:
            try:
                self._folders = FolderWatch(self.watch, self.changed)
            except (ImportError, OSError) as exc:
                log.warning("event grid watcher: cannot watch %s (%s); polling every %.1fs",
                            ", ".join(map(str, self.watch)), exc, self.safety_interval)
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        try:
            while True:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, next_poll - loop.time()))
                    woke = True
                    await asyncio.sleep(SETTLE)
                except asyncio.TimeoutError:
                    woke = False
                self._changed.clear()
                try:
                    await loop.run_in_executor(None, self.poll)
                except Exception:
                    log.exception("event grid watcher: poll failed")
                next_poll = loop.time() + (FOLLOW_UP if woke else self.safety_interval)
        finally:
            if self._folders:
                self._folders.close()
