"""The warm option on Azure ML: one long-lived job per silo per run instead of one job per round.

A per-round AML job pays the job's start every round (queueing, node allocation unless the cluster keeps
nodes up, image pull, mounts). With ``FEDFUNC_AML_SILO_JOBS=per-run`` each silo runs one job for the whole
run, on its own compute with its own identity, built exactly like a per-round job (``AmlSiloJobBackend``:
compute, managed identity, data/policy/outbox mounts, the job code from the orchestrator's ``code``
container, pinned environment) but running ``fedfunc silo-serve`` (``fedfunc.silo.serve``). Submitting a round writes the round's ticketed request to
the silo's inbox — ``inbox/{run}/{silo}/round-NNNN.json`` in the orchestrator's storage, create-only —
and starts the run's job for the silo if it is not there yet. The job runs each request exactly as a
per-round job runs it (every check, per request) and the round hears back the same way (BlobCreated on
the silo's outbox). Cancelling a round's job cancels the silo's run job.

What the silo's identity needs on top of a per-round job: read on the orchestrator's ``inbox`` container
(requests hold no secret: a ticket is signed, not secret, and names one silo) and read on ``models``
(the job reads each round's model from its URL, as the model cannot be a fixed input of a job that
spans rounds). The per-round job stays the default until this mode is verified on a subscription.
"""
from __future__ import annotations

from azure.core.exceptions import ResourceExistsError

from fedfunc.azure import naming
from fedfunc.azure.gateway import JobExists
from fedfunc import layout
from fedfunc.backends.aml import BUNDLES_DATASTORE, TAG_RUN, TAG_SILO, AmlSiloJobBackend, datastore_uri
from fedfunc.contracts import SiloJobRequest
from fedfunc.silo.serve import inbox_prefix, request_name

INBOX = "inbox"
INBOX_ENV, RUN_ENV, SILO_ENV = "FEDFUNC_SILO_INBOX", "FEDFUNC_RUN", "FEDFUNC_SILO"
SERVE_COMMAND = (
    f'PYTHONPATH="${{{{inputs.code}}}}" python -m fedfunc silo-serve --aml --inbox "${INBOX_ENV}" --run "${RUN_ENV}" --silo "${SILO_ENV}"'
    " --data ${{inputs.data}} --bundle ${{inputs.bundle}} --policy ${{inputs.policy}} --outbox ${{outputs.outbox}}"
)


class AmlRunJobBackend(AmlSiloJobBackend):
    """``SiloJobBackend``: a silo's rounds of a run go to its one long-lived job through its inbox.
    ``inbox`` is the orchestrator's ``inbox`` ContainerClient (the app's identity writes it)."""

    def __init__(self, gateway, settings, inbox, **kwargs):
        super().__init__(gateway, settings, **kwargs)
        self.inbox = inbox

    def build_run_job(self, run: str, silo: str, bundle: str):
        """The silo's job for the whole run; the run's signed bundle (one per run) is mounted once."""
        from azure.ai.ml import Input, command
        from azure.ai.ml.entities import ManagedIdentityConfiguration

        env = self.aml.environment
        mounts = self._mounts(silo)
        mounts["inputs"]["bundle"] = Input(type="uri_file", mode="download",
                                           path=datastore_uri(BUNDLES_DATASTORE, layout.bundle(bundle)))
        return command(
            name=naming.run_job_name(run, silo), display_name=f"{run} {silo} (all rounds)",
            experiment_name=naming.experiment(run),
            description="fedfunc silo run job: each round's ticketed request from the inbox, every check per request",
            compute=self.compute_for(silo),
            environment=env if env.startswith("azureml:") else f"azureml:{env}",
            command=SERVE_COMMAND,
            environment_variables={INBOX_ENV: self.inbox.url, RUN_ENV: run, SILO_ENV: silo},
            identity=ManagedIdentityConfiguration(), tags={TAG_RUN: run, TAG_SILO: silo}, **mounts)

    def submit(self, request: SiloJobRequest) -> str:
        """Put the round's request in the silo's inbox (once), then make sure the silo's run job is there.
        Returns the run job's name. ``AzureCallError`` propagates: the silo fails this round."""
        try:
            self.inbox.upload_blob(inbox_prefix(request.run_id, request.silo) + request_name(request.round),
                                   request.model_dump_json().encode(), overwrite=False)
        except ResourceExistsError:
            pass  # a retried activity: the first request stays (the job may already be running it)
        job = self.build_run_job(request.run_id, request.silo, request.bundle or "")
        if self.gateway.job_status(job.name) is None:
            try:
                self.gateway.create_job(job)
            except JobExists:
                pass
        return job.name
