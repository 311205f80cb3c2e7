"""Where a task's data reader reads a silo's ``data`` container from: blob storage with the silo's own
credentials, or a folder (the container mounted by AML, or a local folder for ``fedfunc task try``)."""
from __future__ import annotations

from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient


class BlobDataSource:
    def __init__(self, container: ContainerClient):
        self.container = container

    def list(self, prefix: str) -> list[str]:
        return sorted(b.name for b in self.container.list_blobs(name_starts_with=prefix))

    def read(self, path: str) -> bytes:
        try:
            return self.container.get_blob_client(path).download_blob().readall()
        except ResourceNotFoundError:
            raise FileNotFoundError(path) from None


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
