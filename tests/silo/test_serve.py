"""``fedfunc silo-serve``: a silo's long-lived job for a whole run (the warm option on AML), on mounted
folders, taking each round's ticketed request from its inbox and checking each as a per-round job: the
ticket's issuer, the model it binds (URL and sha256) and the bytes downloaded."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from fedfunc import layout
from fedfunc.backends.aml_run_job import INBOX, SERVE_COMMAND
from fedfunc.backends.local import REPO_ROOT
from fedfunc.contracts import SiloJobRequest
from fedfunc.security import keys
from fedfunc.security.tickets import issue_ticket
from fedfunc.silo.serve import inbox_prefix, request_name
from fedfunc.storage import read_url_for
from fedfunc.security.bundle import open_bundle
from fedfunc.tasks.builtin.datasets import silo_parts
from fedfunc.weights import decode, encode, sha256

SILO, RUN = "serve-silo", "serve-run"


def test_one_job_serves_a_runs_rounds_from_its_inbox_each_checked(tmp_path, orch_conn, policy_for, signed_bundle, trust):
    data, outbox, policy_file = tmp_path / "data", tmp_path / "outbox", tmp_path / "policy.json"
    bundle_file = tmp_path / "run.fedbundle"
    bundle_file.write_bytes(signed_bundle)
    code_hash = open_bundle(signed_bundle).code_hash
    initial = decode(open_bundle(signed_bundle).weights())[0]
    for path, content in silo_parts("digits", 10, alpha=None, seed=0)[0].files("digits").items():
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        (data / path).write_bytes(content)
    outbox.mkdir()
    policy_file.write_text(policy_for(SILO).model_dump_json())
    service = BlobServiceClient.from_connection_string(orch_conn)
    for name in (INBOX, layout.MODELS):
        try:
            service.create_container(name)
        except ResourceExistsError:
            pass
    inbox = service.get_container_client(INBOX)

    def send(round_: int, ticket_key, model_of: int | None = None) -> SiloJobRequest:
        """Round ``round_``'s request, its ticket bound to that round's model; ``model_of``: the request
        names another round's model instead (a swapped model the ticket does not bind)."""
        model = encode({k: v * (1 + round_ / 100) for k, v in initial.items()})
        blob = service.get_blob_client(layout.MODELS, layout.global_model(RUN, round_))
        blob.upload_blob(model, overwrite=True)
        ticket = issue_ticket(ticket_key, run=RUN, round=round_, silo=SILO, code_hash=code_hash,
                              nonce=f"n{round_}", model_url=read_url_for(blob), model_sha256=sha256(model))
        if model_of is not None:
            blob = service.get_blob_client(layout.MODELS, layout.global_model(RUN, model_of))
            model = blob.download_blob().readall()
        request = SiloJobRequest(
            run_id=RUN, round=round_, silo=SILO, nonce=f"n{round_}", task="digits", model_url=read_url_for(blob),
            model_sha256=sha256(model), outbox_prefix=layout.outbox_prefix(RUN, round_, SILO), ticket=ticket,
            bundle=code_hash)
        inbox.upload_blob(inbox_prefix(RUN, SILO) + request_name(round_), request.model_dump_json(), overwrite=True)
        return request

    genuine = [send(0, trust.orchestrator), send(1, trust.orchestrator)]
    forged = send(2, keys.generate())
    swapped = send(3, trust.orchestrator, model_of=0)
    tampered = send(4, trust.orchestrator)  # then its model's bytes change under the ticket's pin
    service.get_blob_client(layout.MODELS, layout.global_model(RUN, 4)).upload_blob(
        encode({k: v * 2 for k, v in initial.items()}), overwrite=True)
    assert "silo-serve" in SERVE_COMMAND and "--outbox ${{outputs.outbox}}" in SERVE_COMMAND
    sas = generate_container_sas(service.account_name, INBOX, account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    proc = subprocess.run([sys.executable, "-m", "fedfunc", "silo-serve", "--inbox", f"{inbox.url}?{sas}",
                           "--run", RUN, "--silo", SILO, "--data", str(data), "--bundle", str(bundle_file),
                           "--policy", str(policy_file),
                           "--outbox", str(outbox), "--poll", "0.1", "--idle", "2"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "served 5 round(s)" in proc.stdout
    for request in genuine:
        job = outbox / request.outbox_prefix
        assert sorted(p.name for p in job.iterdir()) == sorted([layout.EVALUATION, layout.METRICS, layout.UPDATE])
    for request in (forged, swapped):
        assert not (outbox / request.outbox_prefix).exists()  # refused by its ticket, nothing in its slot
    failed = json.loads((outbox / tampered.outbox_prefix / layout.FAILED).read_bytes())
    assert failed["rule"] == "ticket.model_bytes" and not (outbox / tampered.outbox_prefix / layout.UPDATE).exists()
    trail = [json.loads(line) for p in (outbox / "audit").iterdir() for line in p.read_text().splitlines()]
    assert [(e["round"], e["detail"]["rule"]) for e in trail if e["kind"] == "job_refused"] == [
        (2, "ticket.untrusted_issuer"), (3, "ticket.model_url"), (4, "ticket.model_bytes")]
    assert sorted(e["round"] for e in trail if e["kind"] == "job_started") == [0, 1, 4]
