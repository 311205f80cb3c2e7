"""Silo jobs as Azure ML command jobs: one per silo per round, on that silo's compute.

The job spec (what ``build_job`` returns and the tests check):

- ``compute``: the silo's compute (AmlCompute with the silo's user-assigned identity, or an attached
  Arc Kubernetes compute), from the silo registry;
- ``identity``: ``ManagedIdentityConfiguration()`` — the job reads and writes storage as the compute's
  identity, which is the only principal with access to the silo's ``data`` (infra/modules/silo.bicep);
- inputs: ``data`` = the silo's ``data`` container (uri_folder, read-only mount of
  ``azureml://datastores/<silo>_data/paths/``), ``model`` = the global model (uri_file on the
  orchestrator's models datastore), ``bundle`` = the signed task bundle the job names (uri_file
  ``<hash>.fedbundle`` on the orchestrator's bundles datastore, read with the silo's identity — the runner
  verifies it against the silo's policy before importing anything), ``policy`` = the silo owner's
  ``policy.json`` (uri_file on ``<silo>_policy``, which the orchestrator cannot write);
- output ``outbox`` = the silo's ``outbox`` container, read-write mount, so ``metrics.json`` lands before
  ``update.safetensors`` (whose BlobCreated event is what the round waits for);
- input ``code`` = the job code: the folder ``FEDFUNC_AML_CODE`` of the published app, which the app puts once
  per content in its own ``code`` container (``<sha256>/...``, read-only to silo identities) and the job
  downloads from the ``fedfunc_code`` datastore and puts on ``PYTHONPATH``. No AML code asset: those live in
  the workspace's own storage, where silo identities get no role (docs/azure.md, "Silo jobs and workspace
  storage"); ``environment`` = a pinned ``name:version`` (``FEDFUNC_AML_ENVIRONMENT``);
- ``name`` = ``fedfunc.azure.naming.job_name(run, round, silo)``: resubmitting finds the same job;
  tags ``fedfunc.run`` / ``fedfunc.round`` / ``fedfunc.silo`` map AML status events back to the round.

The contract with the silo runner (``fedfunc silo-job``), the exact command the job runs::

    printf %s "$FEDFUNC_SILO_JOB_REQUEST" > request.json && PYTHONPATH="${{inputs.code}}" python -m fedfunc
      silo-job --aml --request request.json --data ${{inputs.data}} --model ${{inputs.model}}
      --bundle ${{inputs.bundle}}
      --policy ${{inputs.policy}} --outbox ${{outputs.outbox}}

The ``SiloJobRequest`` travels as JSON in the job's environment variable ``FEDFUNC_SILO_JOB_REQUEST``:
unlike a literal input or argument it needs no shell quoting (``"$VAR"`` passes any bytes), it is part
of the job definition (auditable in studio), and the runner keeps its ``--request <file>`` contract.
``--data`` and ``--outbox`` are container roots: the runner reads ``{task}/train/`` and ``{task}/test/`` and writes
``runs/{run}/rounds/{r}/silos/{silo}/...`` below them. Nothing secret is in the request: the ticket is
signed, not secret, and ``model_url`` on Azure is a plain URL (the job reads through the model input).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from fedfunc import layout
from fedfunc.azure import naming
from fedfunc.azure.gateway import AzureGateway, JobExists
from fedfunc.contracts import SiloJobRequest
from fedfunc.security.policy import POLICY_BLOB, POLICY_CONTAINER
from fedfunc.settings import Settings

REQUEST_ENV = "FEDFUNC_SILO_JOB_REQUEST"
CODE_CONTAINER = "code"
CODE_COMPLETE = ".complete"  # written last: a code folder without it is an interrupted upload, redone
# The orchestrator's ``bundles`` container as an identity-based datastore silo identities may read
# (infra creates it beside ``fedfunc_models``; each silo identity gets Storage Blob Data Reader on it).
BUNDLES_DATASTORE = "fedfunc_bundles"
COMMAND = (
    f'printf %s "${REQUEST_ENV}" > request.json && PYTHONPATH="${{{{inputs.code}}}}" python -m fedfunc silo-job'
    " --aml --request request.json"
    " --data ${{inputs.data}} --model ${{inputs.model}} --bundle ${{inputs.bundle}} --policy ${{inputs.policy}}"
    " --outbox ${{outputs.outbox}}"
)
SMOKE_COMMAND = (
    'PYTHONPATH="${{{{inputs.code}}}}" python -m fedfunc silo-smoke --aml --id {smoke_id} --silo {silo}'
    " --models-url {models_url}"
    " --data ${{{{inputs.data}}}} --policy ${{{{inputs.policy}}}} --outbox ${{{{outputs.outbox}}}}"
)
TAG_RUN, TAG_ROUND, TAG_SILO = "fedfunc.run", "fedfunc.round", "fedfunc.silo"
TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding"}


def datastore_uri(datastore: str, path: str = "") -> str:
    return f"azureml://datastores/{datastore}/paths/{path}"


def model_path(model_url: str) -> str:
    """Blob path inside ``models`` of the request's global model (its URL may carry a SAS locally)."""
    parts = unquote(urlparse(model_url).path).lstrip("/").split("/")
    if parts[0] != layout.MODELS:  # account host: https://<account>.blob.core.windows.net/models/...
        parts = parts[1:]          # Azurite-style path: /<account>/models/...
    if len(parts) < 2 or parts[0] != layout.MODELS:
        raise ValueError(f"model_url: {model_url!r} is not a blob in the {layout.MODELS!r} container")
    return "/".join(parts[1:])


def code_files(folder: Path) -> dict[str, Path]:
    """The job code's files by relative path (no bytecode caches), in a fixed order."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def code_digest(files: dict[str, Path]) -> str:
    """sha256 over (path, content hash) pairs: the code folder's name in the ``code`` container."""
    h = hashlib.sha256()
    for rel, path in files.items():
        h.update(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


class CodePublisher:
    """Puts the job code folder in the orchestrator's ``code`` container once per content, as ``<sha256>/...``.

    ``container`` is an ``azure.storage.blob.ContainerClient`` (the app's identity has Blob Data Owner on its
    own storage). Silo identities only read that container, so no silo can change what another runs, and
    the runner still checks every task file against the signed bundle.
    """

    def __init__(self, folder: Path, container):
        self.folder, self.container = Path(folder), container
        self._digest: str | None = None

    def __call__(self) -> str:
        """The code's digest; uploads it first if the container lacks a complete copy (once per process)."""
        if self._digest is None:
            files = code_files(self.folder)
            digest = code_digest(files)
            marker = self.container.get_blob_client(f"{digest}/{CODE_COMPLETE}")
            if not marker.exists():
                for rel, path in files.items():
                    self.container.upload_blob(f"{digest}/{rel}", path.read_bytes(), overwrite=True)
                marker.upload_blob(b"", overwrite=True)
            self._digest = digest
        return self._digest


class AmlSiloJobBackend:
    """``SiloJobBackend`` over an ``AzureGateway``; ``compute_for(silo)`` names the silo's compute and
    ``publish_code()`` puts the job code in the ``code`` container and returns its digest."""

    def __init__(self, gateway: AzureGateway, settings: Settings, publish_code: Callable[[], str],
                 compute_for: Callable[[str], str] = naming.compute):
        if settings.aml is None:
            raise ValueError("FEDFUNC_JOB_BACKEND: the aml backend needs the FEDFUNC_AML_* settings")
        self.gateway, self.aml, self.compute_for = gateway, settings.aml, compute_for
        self.publish_code = publish_code

    def build_job(self, request: SiloJobRequest):
        from azure.ai.ml import Input, command
        from azure.ai.ml.entities import ManagedIdentityConfiguration

        silo, env = request.silo, self.aml.environment
        mounts = self._mounts(silo)
        return command(
            name=naming.job_name(request.run_id, request.round, silo),
            display_name=f"{request.run_id} round {request.round} {silo}",
            experiment_name=naming.experiment(request.run_id),
            description="fedfunc silo job: verify code + ticket, train on local data, publish the update",
            compute=self.compute_for(silo),
            environment=env if env.startswith("azureml:") else f"azureml:{env}",
            command=COMMAND,
            environment_variables={REQUEST_ENV: request.model_dump_json()},
            inputs={**mounts["inputs"],
                    "model": Input(type="uri_file", mode="download",
                                   path=datastore_uri(self.aml.models_datastore, model_path(request.model_url))),
                    "bundle": Input(type="uri_file", mode="download",
                                    path=datastore_uri(BUNDLES_DATASTORE, layout.bundle(request.bundle)))},
            outputs=mounts["outputs"],
            identity=ManagedIdentityConfiguration(),
            tags={TAG_RUN: request.run_id, TAG_ROUND: str(request.round), TAG_SILO: silo},
        )

    def _mounts(self, silo: str) -> dict:
        from azure.ai.ml import Input, Output

        return {
            "inputs": {"code": Input(type="uri_folder", mode="download",
                                     path=datastore_uri(self.aml.code_datastore, f"{self.publish_code()}/")),
                       "data": Input(type="uri_folder", mode="ro_mount",
                                     path=datastore_uri(naming.datastore(silo, layout.DATA))),
                       "policy": Input(type="uri_file", mode="download",
                                       path=datastore_uri(naming.datastore(silo, POLICY_CONTAINER), POLICY_BLOB))},
            "outputs": {"outbox": Output(type="uri_folder", mode="rw_mount",
                                         path=datastore_uri(naming.datastore(silo, layout.OUTBOX)))},
        }

    def build_smoke_job(self, silo: str, smoke_id: str, models_url: str):
        """The onboarding smoke job: same compute, identity, mounts and environment as a training job,
        but it trains nothing; it checks access and writes its verdict to ``outbox/smoke/{id}.json``."""
        from azure.ai.ml import command
        from azure.ai.ml.entities import ManagedIdentityConfiguration

        env = self.aml.environment
        return command(
            name=naming.smoke_job_name(silo, smoke_id), display_name=f"onboarding smoke {silo}",
            experiment_name="fedfunc-onboarding", compute=self.compute_for(silo),
            environment=env if env.startswith("azureml:") else f"azureml:{env}",
            command=SMOKE_COMMAND.format(smoke_id=smoke_id, silo=silo, models_url=models_url),
            identity=ManagedIdentityConfiguration(), tags={TAG_SILO: silo}, **self._mounts(silo))

    def smoke(self, silo: str, smoke_id: str, models_url: str, *, timeout: float = 480, poll: float = 15) -> dict:
        """Submit the smoke job (once per id) and wait for it to end. AML compute may scale up from zero,
        so a wait that times out raises and the retried activity resumes waiting on the same job."""
        job = self.build_smoke_job(silo, smoke_id, models_url)
        if self.gateway.job_status(job.name) is None:
            try:
                self.gateway.create_job(job)
            except JobExists:
                pass
        deadline = time.monotonic() + timeout
        while (status := self.gateway.job_status(job.name)) not in TERMINAL:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"smoke job {job.name} is still {status} after {timeout:.0f}s")
            time.sleep(poll)
        return {"ok": status == "Completed", "job": job.name, "status": status}

    def submit(self, request: SiloJobRequest) -> str:
        """Submit once: an existing job of the same name (a retried activity) is the job.

        ``AzureCallError`` (AML's message) propagates; the round reports the silo failed and goes on.
        """
        job = self.build_job(request)
        if self.gateway.job_status(job.name) is not None:
            return job.name
        try:
            return self.gateway.create_job(job)
        except JobExists:
            return job.name

    def cancel(self, job_id: str) -> None:
        self.gateway.cancel_job(job_id)


def backend_from_settings(settings: Settings) -> AmlSiloJobBackend:
    """The production wiring: real gateway, managed identity, compute names from the silo registry; a job
    per round, or (``FEDFUNC_AML_SILO_JOBS=per-run``) one per run (``fedfunc.backends.aml_run_job``)."""
    from fedfunc.azure.gateway import AzureMLGateway
    from fedfunc.registry import TABLE, SiloRegistry
    from fedfunc.storage import blob_service, table_service

    registry = SiloRegistry(table_service(settings).get_table_client(TABLE))  # no I/O until a lookup
    gateway, compute_for = AzureMLGateway.from_settings(settings), lambda silo: registry.get(silo).compute
    code = CodePublisher(Path(settings.aml.code), blob_service(settings).get_container_client(CODE_CONTAINER))
    if settings.aml.silo_jobs == "per-run":
        from fedfunc.backends.aml_run_job import INBOX, AmlRunJobBackend

        return AmlRunJobBackend(gateway, settings, blob_service(settings).get_container_client(INBOX),
                                publish_code=code, compute_for=compute_for)
    return AmlSiloJobBackend(gateway, settings, publish_code=code, compute_for=compute_for)
