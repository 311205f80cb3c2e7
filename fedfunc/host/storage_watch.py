"""The storage watcher: new or changed blobs in subscribed containers become `Microsoft.Storage.BlobCreated`
events (Event Grid schema), each blob version exactly once, also across restarts (seen ETags are stored).

Listing every container often burns CPU for nothing (a listing costs Azurite about 5-8 ms), and
listing rarely makes events late. So the watcher lists when storage says what changed:
- Azurite's access log (`--storage-log`, Azurite started without `--silent`) names each blob written,
  once the upload is answered: only that blob's name is listed, at once;
- or, more coarsely, the folder where Azurite keeps its data (`--watch`): any change there lists every
  subscribed container, and once more shortly after (the change can come before the commit).
Both are read with inotify on the event loop. A slow safety poll covers what they cannot show
(storage elsewhere, no inotify on this system).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote, urlparse

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


Changes = dict[tuple[str, str], "set[str] | None"]  # (account, container) → blob names written, None: any
_ACCESS = re.compile(r'"(?:PUT|POST|DELETE) /([^/?\s]+)/([^/?\s]+)(?:/([^?\s]*))?(?:\?\S*)? HTTP/[0-9.]+" 2[0-9][0-9] ')


def merge(into: Changes, more: Changes) -> None:
    for key, names in more.items():
        if names is None or (key in into and into[key] is None):
            into[key] = None
        else:
            into[key] = (into.get(key) or set()) | names


class AccessLog:
    """Azurite's access log (without `--silent`: one line per request, written once the response is
    sent): which blobs were just written, so only those are listed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.partial = b""

    def read(self) -> Changes:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:
                    self.offset, self.partial = 0, b""  # truncated or replaced
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return {}
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        changes: Changes = {}
        for line in lines:
            m = _ACCESS.search(line.decode(errors="replace"))
            if m:
                account, container, blob = m.group(1), m.group(2), unquote(m.group(3) or "")
                merge(changes, {(account, container): {blob} if blob else None})
        return changes


class FileEvents:
    """inotify on folder trees and files, read on the event loop (no thread, no CPU while nothing changes)."""

    def __init__(self, on_events: Callable[[set[int]], None]):
        from inotify_simple import INotify, flags
        self.flags = flags
        self.mask = flags.MODIFY | flags.CLOSE_WRITE | flags.CREATE | flags.DELETE | flags.MOVED_TO
        self.inotify = INotify(nonblocking=True)
        self.on_events = on_events
        self.trees: dict[int, Path] = {}  # watch descriptor → folder, for folders watched as trees
        asyncio.get_running_loop().add_reader(self.inotify.fileno(), self._read)

    def tree(self, root: Path) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        for folder, _, _ in os.walk(root):
            self.trees[self.inotify.add_watch(folder, self.mask)] = Path(folder)

    def file(self, path: Path) -> int:
        Path(path).touch(exist_ok=True)
        return self.inotify.add_watch(str(path), self.flags.MODIFY)

    def _read(self) -> None:
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return
        for e in events:
            if e.mask & self.flags.CREATE and e.mask & self.flags.ISDIR and e.wd in self.trees:
                self.tree(self.trees[e.wd] / e.name)
        if events:
            self.on_events({e.wd for e in events})

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.inotify.fileno())
        self.inotify.close()


class StorageWatcher:
    """Runs `poll(only)` (a blocking listing: of the blobs in `only`, or of every subscribed container when
    `only` is None) when storage changed, else every `safety_interval` seconds; polls never overlap."""

    def __init__(self, poll: Callable[[Changes | None], int], safety_interval: float,
                 watch: tuple[Path, ...] = (), access_logs: tuple[Path, ...] = ()):
        self.poll, self.safety_interval = poll, safety_interval
        self.watch, self.access_logs = watch, access_logs
        self._changed = asyncio.Event()
        self._pending: Changes = {}
        self._everything = False

    def _on_events(self, wds: set[int]) -> None:
        if wds & set(self._files.trees):
            self._everything = True
        for access_log in self._logs:
            merge(self._pending, access_log.read())
        if self._everything or self._pending:
            self._changed.set()

    async def run(self) -> None:
        self._logs = [AccessLog(p) for p in self.access_logs]
        self._files = None
        if self.watch or self.access_logs:
            try:
                self._files = FileEvents(self._on_events)
                for root in self.watch:
                    self._files.tree(root)
                for path in self.access_logs:
                    self._files.file(path)
            except (ImportError, OSError) as exc:
                log.warning("event grid watcher: cannot watch %s (%s); polling every %.1fs",
                            ", ".join(map(str, self.watch + self.access_logs)), exc, self.safety_interval)
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        try:
            while True:
                folder_change = False
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, next_poll - loop.time()))
                    folder_change = self._everything
                    if folder_change:
                        await asyncio.sleep(SETTLE)  # a folder change comes as a burst of file events
                except asyncio.TimeoutError:
                    self._everything = True  # the safety poll (or the follow-up after a folder change)
                self._changed.clear()
                only = None if self._everything else self._pending
                self._pending, self._everything = {}, False
                try:
                    await loop.run_in_executor(None, self.poll, only)
                except Exception:
                    log.exception("event grid watcher: poll failed")
                # a folder change can come before the upload is committed: look again shortly after
                next_poll = loop.time() + (FOLLOW_UP if folder_change and self._files else self.safety_interval)
        finally:
            if self._files:
                self._files.close()
