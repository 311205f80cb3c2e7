"""The orchestrator's own storage account: models, run records, evaluation sets."""
from __future__ import annotations

import json

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from fedfunc import layout
from fedfunc.storage import read_url_for


def to_json(value: dict) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


class RunStore:
    def __init__(self, service: BlobServiceClient):
        self.service = service
        self._ensured: set[str] = set()

    def container(self, name: str) -> ContainerClient:
        client = self.service.get_container_client(name)
        if name not in self._ensured:
            try:
                client.create_container()
            except ResourceExistsError:
                pass
            self._ensured.add(name)
        return client

    def get_bytes(self, container: str, path: str) -> bytes | None:
        try:
            return self.container(container).download_blob(path).readall()
        except ResourceNotFoundError:
            return None

    def put_bytes(self, container: str, path: str, data: bytes) -> None:
        self.container(container).upload_blob(path, data, overwrite=True)

    def create_once(self, container: str, path: str, data: bytes) -> bool:
        """Write only if absent; False when an earlier attempt already wrote it (it is then kept)."""
        try:
            self.container(container).upload_blob(path, data, overwrite=False)
            return True
        except ResourceExistsError:
            return False

    def get_json(self, container: str, path: str) -> dict | None:
        data = self.get_bytes(container, path)
        return None if data is None else json.loads(data)

    def put_json(self, container: str, path: str, value: dict) -> None:
        self.put_bytes(container, path, to_json(value))

    def model_read_url(self, path: str) -> str:
        return read_url_for(self.container(layout.MODELS).get_blob_client(path))
