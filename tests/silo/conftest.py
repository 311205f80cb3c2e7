"""Silo fixtures: provisioned local silos on the session's Azurite, keys, signed bundles, tickets, jobs."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from fedfunc import layout
from fedfunc.contracts import SiloJobRequest
from fedfunc.host.testing import wait_until
from fedfunc.registry import SiloRegistry
from fedfunc.security import keys
from fedfunc.security.bundle import open_bundle
from fedfunc.security.policy import SiloPolicy
from fedfunc.security.tickets import issue_ticket
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.local import provision_local_silo, release_local_silo, upload_silo_data
from fedfunc.storage import read_url_for, table_service
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.builtin.datasets import load, split_train_test
from fedfunc.tasks.signing import build_bundle
from fedfunc.weights import decode, encode, sha256

HYPERPARAMS = {"epochs": 1, "lr": 0.05, "batch_size": 32}


@pytest.fixture(scope="session")
def trust():
    """The orchestrator's ticket key and a data scientist's code-signing key."""
    return SimpleNamespace(orchestrator=keys.generate(), scientist=keys.generate())


@pytest.fixture(scope="session")
def policy_for(trust):
    """``policy_for(silo, **overrides)``: a policy trusting ``trust``'s keys for task digits."""
    def make(name: str, **overrides) -> SiloPolicy:
        fields = dict(silo=name, orchestrator_keys=[keys.public_b64(trust.orchestrator.public_key())],
                      trusted_signers=[keys.public_b64(trust.scientist.public_key())], allowed_tasks=["digits"])
        return SiloPolicy(**{**fields, **overrides})
    return make


@pytest.fixture
def orch_conn(azurite) -> str:
    return azurite.orchestrator.connection_string


@pytest.fixture
def registry(orch_conn) -> SiloRegistry:
    return SiloRegistry.create(table_service(orch_conn))


@pytest.fixture(scope="session")
def home_root(tmp_path_factory):
    """The local home silos are provisioned in (each test its own silos), whose one warm worker pool serves
    every test's jobs and is stopped at the end."""
    root = tmp_path_factory.mktemp("silo-home")
    yield root
    from fedfunc.backends.local import LocalProcessBackend
    LocalProcessBackend(root).stop_pool()


@pytest.fixture
def silos(azurite, orch_conn, home_root, policy_for):
    """``silos(name, **policy)`` provisions a local silo (policy trusting ``trust``); released after the test."""
    made = []

    def make(name: str, **policy):
        record = provision_local_silo(name, azurite_home=azurite.location, orchestrator_conn=orch_conn,
                                      home_root=home_root, initial_policy=policy_for(name, **policy))
        made.append(name)
        return record

    make.home_root = home_root
    yield make
    for name in made:
        release_local_silo(name, azurite_home=azurite.location, orchestrator_conn=orch_conn, home_root=home_root)


def digits_files(n: int = 120) -> dict[str, bytes]:
    """A silo's share of digits: the first ``n`` pool samples, split into its train (96) and test (24) parts."""
    pool, _ = load("digits")
    return split_train_test(pool.take(np.arange(n)), seed=0).files("digits")


@pytest.fixture
def silo_with_data(silos):
    """``silo_with_data(name, **policy)`` provisions a silo and uploads a digits share with its own key."""
    def make(name: str, **policy):
        record = silos(name, **policy)
        upload_silo_data(silo_home(silos.home_root, name), digits_files())
        return record
    return make


@pytest.fixture
def own_service(silos):
    """``own_service(name)``: the silo's blob service with its own key, as the silo owner inspects it."""
    def make(name: str) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(
            read_credentials(silo_home(silos.home_root, name)).connection_string)
    return make


@pytest.fixture(scope="session")
def signed_bundle(trust) -> bytes:
    """The built-in digits task, signed by ``trust``'s scientist."""
    return build_bundle(task_dir("digits"), trust.scientist, HYPERPARAMS)


@pytest.fixture
def put_bundle(orch_conn):
    """``put_bundle(data)`` stores a bundle in the orchestrator's ``bundles`` (as the API does); its hash."""
    service = BlobServiceClient.from_connection_string(orch_conn)
    for container in (layout.MODELS, layout.BUNDLES):
        try:
            service.create_container(container)
        except ResourceExistsError:
            pass

    def put(data: bytes, code_hash: str | None = None) -> str:
        code_hash = code_hash or open_bundle(data).code_hash
        service.get_blob_client(layout.BUNDLES, layout.bundle(code_hash)).upload_blob(data, overwrite=True)
        return code_hash
    return put


@pytest.fixture
def job_factory(orch_conn, silos, trust, signed_bundle, put_bundle):
    """``job_factory(silo, run, bundle=None, **overrides)`` → a request for round 0 of ``bundle`` (default: the
    signed digits bundle), its global model the bundle's initial weights, with the ticket the orchestrator
    issues for it (bound to the model URL and sha256 after ``overrides``)."""
    service = BlobServiceClient.from_connection_string(orch_conn)

    def make(silo: str, run: str, bundle: bytes | None = None, **overrides) -> SiloJobRequest:
        bundle = bundle or signed_bundle
        code_hash = put_bundle(bundle)
        data = encode(decode(open_bundle(bundle).weights())[0])
        blob = service.get_blob_client(layout.MODELS, layout.global_model(run, 0))
        blob.upload_blob(data, overwrite=True)
        fields = dict(run_id=run, round=0, silo=silo, nonce="n0nce", task="digits",
                      model_url=read_url_for(blob), model_sha256=sha256(data),
                      outbox_prefix=layout.outbox_prefix(run, 0, silo), bundle=code_hash)
        fields.update(overrides)
        fields.setdefault("ticket", issue_ticket(  # what the orchestrator signs for exactly this job
            trust.orchestrator, run=run, round=0, silo=silo, code_hash=code_hash, nonce="n0nce",
            model_url=fields["model_url"], model_sha256=fields["model_sha256"]))
        return SiloJobRequest(**fields)

    make.orch_conn = orch_conn
    return make


@pytest.fixture
def wait_outbox():
    """``wait_outbox(service, prefix, names)``: poll the outbox until one of ``names`` exists; returns it."""
    def wait(service: BlobServiceClient, prefix: str, names: tuple[str, ...], timeout: float = 90) -> str:
        def landed() -> str | None:
            return next((n for n in names if service.get_blob_client(layout.OUTBOX, prefix + n).exists()), None)
        return wait_until(landed, timeout, interval=0.2, what=f"one of {names} under outbox/{prefix}")
    return wait


@pytest.fixture
def wait_job_ended():
    """``wait_job_ended(pid)``: poll until a detached job process has exited (or is an unreaped zombie)."""
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (ProcessLookupError, FileNotFoundError):
            return False

    def wait(pid: int, timeout: float = 60) -> None:
        wait_until(lambda: not alive(pid), timeout, interval=0.1, what=f"job process {pid} ended")
    return wait


@pytest.fixture
def hanging_server():
    """An HTTP endpoint that accepts connections and never answers: a job downloading from it blocks.
    ``accepted`` holds each connection taken, so a test can wait until a job is blocked on it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    accepted = []

    def serve():
        while True:
            try:
                accepted.append(srv.accept())
            except OSError:  # closed at teardown
                return
    threading.Thread(target=serve, daemon=True).start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{srv.getsockname()[1]}", accepted=accepted)
    srv.close()
