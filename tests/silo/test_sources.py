"""A local silo job's data source: its own container, read concurrently, kept between rounds by ETag."""
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from fedfunc.silo.sources import BlobDataSource
from fedfunc.tasks.data import DataReader


def test_the_cache_serves_unchanged_blobs_and_refetches_changed_ones(azurite, tmp_path):
    service = BlobServiceClient.from_connection_string(azurite.orchestrator.connection_string)
    try:
        container = service.create_container("cache-test")
    except ResourceExistsError:
        container = service.get_container_client("cache-test")
    for i in range(20):
        container.upload_blob(f"t/train/{i:02d}.txt", f"v1-{i}".encode(), overwrite=True)

    first = DataReader(BlobDataSource(container, tmp_path / "cache"), "t/train/")
    assert first.read_many(first.files()) == [f"v1-{i}".encode() for i in range(20)]

    container.upload_blob("t/train/03.txt", b"v2-3", overwrite=True)  # the owner replaced one file
    downloads = []
    real = container.get_blob_client

    def counting(name):
        downloads.append(name)
        return real(name)

    container.get_blob_client = counting
    again = DataReader(BlobDataSource(container, tmp_path / "cache"), "t/train/")
    data = again.read_many(again.files())
    assert data[3] == b"v2-3" and data[4] == b"v1-4"
    assert downloads == ["t/train/03.txt"]
    assert DataReader(BlobDataSource(container), "t/train/").read_bytes("03.txt") == b"v2-3"  # no cache: direct
