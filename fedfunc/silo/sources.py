"""Where a task's data reader reads a silo's ``data`` container from: blob storage with the silo's own
credentials, or a folder (the container mounted by AML, or a local folder for ``fedfunc task try``).

A local silo job downloads its data every round (AML mounts it instead); ``BlobDataSource`` can keep a
copy in the silo's own home, keyed by each blob's ETag, so later rounds read only what changed.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

CONCURRENT_READS = 16


def _etag(value: str) -> str:
    """Listings and downloads quote ETags differently."""
    return value.strip('"')


class BlobDataSource:
    """The silo's ``data`` container; with ``cache`` (a folder of the silo's own), blobs listed with an ETag
    already cached are read from there."""

    def __init__(self, container: ContainerClient, cache: Path | None = None):
        self.container, self.cache = container, Path(cache) if cache else None
        self.etags: dict[str, str] = {}

    def list(self, prefix: str) -> list[str]:
        blobs = list(self.container.list_blobs(name_starts_with=prefix))
        self.etags.update({b.name: _etag(b.etag) for b in blobs})
        return sorted(b.name for b in blobs)

    def read(self, path: str) -> bytes:
        cached = self._cached(path)
        if cached is not None:
            return cached
        try:
            download = self.container.get_blob_client(path).download_blob()
        except ResourceNotFoundError:
            raise FileNotFoundError(path) from None
        data = download.readall()
        self._keep(path, _etag(download.properties.etag), data)
        return data

    def read_many(self, paths: Sequence[str]) -> Iterator[bytes]:
        """Many blobs at once (one request each, ``CONCURRENT_READS`` in flight), in order."""
        with ThreadPoolExecutor(CONCURRENT_READS) as pool:
            yield from pool.map(self.read, paths)

    def _slot(self, path: str) -> Path:
        return self.cache / hashlib.sha256(path.encode()).hexdigest()

    def _cached(self, path: str) -> bytes | None:
        etag = self.etags.get(path)
        if self.cache is None or etag is None:
            return None
        slot = self._slot(path)
        try:
            if (slot.parent / (slot.name + ".etag")).read_text() == etag:
                return slot.read_bytes()
        except OSError:
            pass
        return None

    def _keep(self, path: str, etag: str, data: bytes) -> None:
        if self.cache is None:
            return
        self.cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        slot, tmp = self._slot(path), self.cache / f".{os.getpid()}.{hashlib.sha256(path.encode()).hexdigest()}"
        tmp.write_bytes(data)
        tmp.replace(slot)  # the bytes first, then the ETag that vouches for them
        (slot.parent / (slot.name + ".etag")).write_text(etag)


class DirDataSource:
    """A folder whose files stand for the container's blobs (relative POSIX paths); links are not followed."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.is_symlink())
        return sorted(n for n in names if n.startswith(prefix))

    def read(self, path: str) -> bytes:
        target = self.root / path
        if ".." in Path(path).parts or not target.is_file() or target.is_symlink():
            raise FileNotFoundError(path)
        return target.read_bytes()
