"""A scientist's own task, written in a temporary folder outside the repository, through the real system:
signed, uploaded, federated across 3 silos to within 3 points of the same model trained centrally; the
orchestrator's process never imports its code (nor torch); and one byte changed in one of its files after
signing makes every silo refuse, naming the rule and the file."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedfunc import layout
from fedfunc.security.policy import parse_policy, write_policy
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.io import BlobSiloIO
from fedfunc.storage import blob_service
from fedfunc.tasks.data import MemoryDataSource
from fedfunc.tasks.signing import prepare
from fedfunc.tasks.simulation import LocalSilo, centralized_curve

SILOS = ("site-1", "site-2", "site-3")
NAME = "pixels"
ROUNDS = 3

TOML = f'name = "{NAME}"\nentry = "model:PixelNet"\nrequirements = ["torch>=2.0", "numpy>=1.24"]\n'
MODEL = '''
import os
import sys

import numpy as np
import torch
from torch import nn

from fedfunc.tasks.api import Hyperparams, Task, array_dataset

from .columns import PIXELS

with open({log!r}, "a") as log:  # who imports this code: pid and command line
    log.write(f"{{os.getpid()}} {{' '.join(sys.argv)}}\\n")


class PixelHyperparams(Hyperparams):
    epochs: int = 2
    lr: float = 0.1
    batch_size: int = 16


class PixelNet(Task):
    Hyperparams = PixelHyperparams
    num_classes = 10

    def build_model(self):
        return nn.Sequential(nn.Linear(len(PIXELS), 32), nn.ReLU(), nn.Linear(32, 10))

    def optimizer(self, parameters):
        return torch.optim.SGD(parameters, lr=self.hp.lr, momentum=0.9)

    def read_data(self, reader):
        table = reader.table("*.parquet", {{**{{p: "float32" for p in PIXELS}}, "digit": "int64"}})
        return array_dataset(np.stack([table[p] for p in PIXELS], axis=1) / 16.0, table["digit"])
'''
COLUMNS = 'PIXELS = [f"p{i:02d}" for i in range(64)]\n'


def parquet(split) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({**{f"p{i:02d}": split.x[:, i] for i in range(64)}, "digit": split.y}), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def own_task(stack, digits, tmp_path_factory):
    """The task folder, the silos' Parquet data uploaded by their owners, and each owner allowing the task."""
    folder = tmp_path_factory.mktemp("outside-the-repo") / "pixels"
    folder.mkdir()
    log = folder.parent / "imports.log"
    (folder / "task.toml").write_text(TOML)
    (folder / "model.py").write_text(MODEL.format(log=str(log)))
    (folder / "columns.py").write_text(COLUMNS)
    assert not folder.resolve().is_relative_to(Path(__file__).resolve().parents[2])
    files = {}
    for silo, part in zip(SILOS, digits):
        files[silo] = {f"{NAME}/train/part.parquet": parquet(part.train), f"{NAME}/test/part.parquet": parquet(part.test)}
        stack.upload_data(silo, files[silo])
        creds = read_credentials(silo_home(stack.home, silo))
        policy = parse_policy(BlobSiloIO.of(creds).read_policy())
        write_policy(creds.connection_string, policy.model_copy(update={
            "allowed_tasks": [*policy.allowed_tasks, NAME]}), replace=True)
    return folder, log, files


def test_own_task_federates_to_within_3_points_of_central_and_never_runs_in_the_orchestrator(stack, own_task):
    folder, log, files = own_task
    bundle = stack.bundle(folder)
    run = stack.start_run({"bundle": bundle, "silos": list(SILOS), "rounds": ROUNDS, "round_deadline_s": 180,
                           "run_id": "e2e-own-task"})
    status = stack.wait_run(run, timeout=600)
    assert status["runtime_status"] == "Completed", status
    federated = status["output"]["metrics"]["accuracy"]

    prepared = prepare(folder)
    silos = [LocalSilo.of(s, MemoryDataSource(files[s]), f"{NAME}/") for s in SILOS]
    central = centralized_curve(prepared.task, prepared.initial, silos, rounds=ROUNDS)[-1]
    assert central["num_examples"] == status["output"]["metrics"]["num_examples"]
    assert federated >= central["accuracy"] - 0.03, (federated, central)

    importers = [line.split(" ", 1) for line in log.read_text().splitlines()]
    host = stack.host.proc.pid
    assert importers and all(int(pid) != host for pid, _ in importers)
    jobs = [argv for pid, argv in importers if int(pid) != os.getpid()]  # the test process signed it
    # Silo jobs: forks of a silo's warm worker pool (argv of `fedfunc silo-pool`) or `fedfunc silo-job` processes.
    assert len(jobs) >= len(SILOS) * (ROUNDS + 1) and all("silo-job" in argv or "silo-pool" in argv for argv in jobs)
    maps = Path(f"/proc/{host}/maps").read_text()
    assert "libtorch" not in maps, "the orchestrator's process loaded torch"


def test_one_byte_changed_after_signing_makes_every_silo_refuse(stack, own_task):
    """The stored bundle is edited in the orchestrator's storage (one byte of one file): its name — the hash
    of the signed manifest — stays, and every silo refuses it before importing anything."""
    folder, _, _ = own_task
    code_hash = stack.bundle(folder)
    blob = blob_service(stack.azurite.orchestrator.connection_string).get_blob_client(
        layout.BUNDLES, layout.bundle(code_hash))
    src, out = zipfile.ZipFile(io.BytesIO(blob.download_blob().readall())), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            z.writestr(info, data.replace(b"range(64)", b"range(63)") if info.filename == "files/columns.py" else data)
    blob.upload_blob(out.getvalue(), overwrite=True)
    try:
        run = stack.start_run({"bundle": code_hash, "silos": list(SILOS), "rounds": 1, "round_deadline_s": 120,
                               "run_id": "e2e-tampered"})
        status = stack.wait_run(run, timeout=300)
        assert status["runtime_status"] == "Failed"
        for silo in SILOS:
            assert f"{silo}: refused by rule bundle.file_hash on columns.py" in status["error"], status["error"]
    finally:
        blob.upload_blob(stack.sign(folder), overwrite=True)
