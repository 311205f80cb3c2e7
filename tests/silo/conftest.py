"""Silo fixtures: provisioned local silos on the session's Azurite, a global model in ``models``."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from fedfunc import layout
from fedfunc.backends import Hyperparams, SiloJobRequest
from fedfunc.registry import SiloRegistry
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.local import provision_local_silo, release_local_silo, upload_silo_data
from fedfunc.storage import read_url_for, table_service
from fedfunc.tasks.registry import get_task
from fedfunc.weights import encode, model_to_arrays, sha256


@pytest.fixture
def orch_conn(azurite) -> str:
    return azurite.orchestrator.connection_string


@pytest.fixture
def registry(orch_conn) -> SiloRegistry:
    return SiloRegistry.create(table_service(orch_conn))


@pytest.fixture
def silos(azurite, orch_conn, tmp_path):
    """``silos(name)`` provisions a local silo under a per-test home root; all are released after the test."""
    made = []

    def make(name: str):
        record = provision_local_silo(name, azurite_home=azurite.location, orchestrator_conn=orch_conn,
                                      home_root=tmp_path)
        made.append(name)
        return record

    make.home_root = tmp_path
    yield make
    for name in made:
        release_local_silo(name, azurite_home=azurite.location, orchestrator_conn=orch_conn, home_root=tmp_path)


def digits_partition(n: int = 120, offset: int = 0):
    ds = get_task("digits").load_dataset()
    return ds.x_train[offset:offset + n], ds.y_train[offset:offset + n]


@pytest.fixture
def job_factory(orch_conn, silos):
    """``job_factory(silo, run)`` → a SiloJobRequest for round 0 of ``run`` with a real global model."""
    service = BlobServiceClient.from_connection_string(orch_conn)
    try:
        service.create_container(layout.MODELS)
    except ResourceExistsError:
        pass

    def make(silo: str, run: str, **overrides) -> SiloJobRequest:
        model = get_task("digits").build_model(seed=0)
        data = encode(model_to_arrays(model))
        blob = service.get_blob_client(layout.MODELS, layout.global_model(run, 0))
        blob.upload_blob(data, overwrite=True)
        fields = dict(run_id=run, round=0, silo=silo, nonce="n0nce", task="digits",
                      hyperparams=Hyperparams(epochs=1, lr=0.05, batch_size=32), model_url=read_url_for(blob),
                      model_sha256=sha256(data), outbox_prefix=layout.outbox_prefix(run, 0, silo))
        fields.update(overrides)
        return SiloJobRequest(**fields)

    make.orch_conn = orch_conn
    return make


@pytest.fixture
def silo_with_data(silos):
    """``silo_with_data(name, offset)`` provisions a silo and uploads a digits partition with its own key."""
    def make(name: str, offset: int = 0):
        record = silos(name)
        x, y = digits_partition(offset=offset)
        upload_silo_data(silo_home(silos.home_root, name), "digits", x, y)
        return record
    return make


@pytest.fixture
def own_service(silos):
    """``own_service(name)``: the silo's blob service with its own key, as the silo owner inspects it."""
    def make(name: str) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(
            read_credentials(silo_home(silos.home_root, name)).connection_string)
    return make
