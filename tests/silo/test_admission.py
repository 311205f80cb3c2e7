"""Every admission refusal, run as a real job against the silo's storage: the failure names the rule and
the object, the silo's data is never read, and nothing but failed.json lands in the outbox. Then the task
failures a silo reports after admission: an import error, a missing method, weights of the wrong shape."""
import json
from datetime import datetime, timedelta, timezone

import pytest

import io as _io
import shutil
import zipfile

from fedfunc import layout
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.security import keys
from fedfunc.security.audit import SiloAuditTrail
from fedfunc.security.tickets import issue_ticket
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.silo.io import BlobSiloIO
from fedfunc.silo.runner import JobFailed, run_job
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.signing import build_bundle


class SpyIO(BlobSiloIO):
    """The silo's real storage, counting reads of its data container."""

    def __init__(self, *args):
        super().__init__(*args)
        self.data_reads, source = 0, self.data
        spy = self

        class Counting:
            def list(self, prefix):
                return source.list(prefix)

            def read(self, path):
                spy.data_reads += 1
                return source.read(path)

        self.data = Counting()


@pytest.fixture
def silo_io(silos):
    def make(name: str) -> SpyIO:
        creds = read_credentials(silo_home(silos.home_root, name))
        return SpyIO(creds.connection_string, creds.models_sas, creds.bundles_url)
    return make


def _outbox_names(io, request) -> list[str]:
    return sorted(b.name.rsplit("/", 1)[1] for b in io.service.get_container_client(layout.OUTBOX)
                  .list_blobs(name_starts_with=request.outbox_prefix))


def _refused(io, request, rule: str, object_part: str) -> dict:
    """The job is refused by ``rule`` before any data is read. An authenticated job (valid ticket) says so
    in its round's slot (failed.json, nothing else); an unauthenticated one leaves the round untouched and
    only the silo's own trail records the refusal."""
    with pytest.raises(JobFailed) as err:
        run_job(request, io)
    assert err.value.rule == rule, err.value.reason
    assert object_part in err.value.reason and rule in err.value.reason
    assert io.data_reads == 0, "data was read before admission refused the job"
    refusal = [e for e in SiloAuditTrail(io.outbox, request.silo).recent()
               if e["kind"] == "job_refused" and e["job"] == request.job_key][-1]
    assert refusal["detail"]["rule"] == rule
    unauthenticated = rule.startswith(("ticket.", "policy.missing", "policy.invalid")) and rule != "ticket.model_bytes"
    if unauthenticated:
        assert _outbox_names(io, request) == []
        return {"rule": rule, "reason": err.value.reason}
    assert _outbox_names(io, request) == [layout.FAILED]
    failed = json.loads(io.outbox.read(request.outbox_prefix + layout.FAILED))
    assert failed["rule"] == rule
    return failed


def _ticket(trust_key, request, **over):
    fields = dict(run=request.run_id, round=request.round, silo=request.silo,
                  code_hash=request.bundle, nonce=request.nonce, model_url=request.model_url,
                  model_sha256=request.model_sha256)
    return issue_ticket(trust_key, **{**fields, **over})


def test_valid_job_is_admitted_and_recorded_in_the_silos_trail(silo_with_data, silo_io, job_factory):
    silo_with_data("adm-ok")
    io, request = silo_io("adm-ok"), job_factory("adm-ok", "run-adm-ok")
    run_job(request, io)
    assert _outbox_names(io, request) == [layout.EVALUATION, layout.METRICS, layout.UPDATE]
    assert io.data_reads == 2  # its test part, then its training part
    trail = SiloAuditTrail(io.outbox, "adm-ok").recent()
    egress = {e["detail"]["name"].rsplit("/", 1)[1]: e["detail"]["sha256"] for e in trail if e["kind"] == "artifact_egress"}
    from fedfunc.weights import sha256
    assert egress[layout.UPDATE] == sha256(io.outbox.read(request.outbox_prefix + layout.UPDATE))
    assert [e["kind"] for e in trail if e["job"] == request.job_key][0] == "job_started"


def test_orchestrator_reads_the_silo_trail_with_its_outbox_sas_only(silo_with_data, silo_io, job_factory):
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ContainerClient
    from fedfunc.security.audit import silo_events

    record = silo_with_data("adm-trail")
    run_job(job_factory("adm-trail", "run-trail"), silo_io("adm-trail"))
    events = silo_events(record)
    assert {e.kind for e in events} == {"job_started", "artifact_egress"}
    assert all(e.source == "silo:adm-trail" for e in events)
    outbox = ContainerClient.from_container_url(f"{record.blob_url}/{layout.OUTBOX}?{record.outbox_read_sas}")
    with pytest.raises(HttpResponseError):  # the orchestrator cannot forge the silo's entries
        outbox.get_blob_client(SiloAuditTrail.path(events[0].at)).append_block(b'{"kind": "job_started"}\n')


def test_forged_ticket_is_refused(silo_with_data, silo_io, job_factory):
    silo_with_data("adm-a")
    request = job_factory("adm-a", "run-forged")
    forged = _ticket(keys.generate(), request)
    failed = _refused(silo_io("adm-a"), request.model_copy(update={"ticket": forged}), "ticket.untrusted_issuer",
                      "job ticket for run-forged/r0/adm-a")
    assert "not an orchestrator key this silo's policy trusts" in failed["reason"]


def test_ticket_with_edited_payload_is_refused(silo_with_data, silo_io, job_factory, trust):
    import base64
    silo_with_data("adm-b")
    request = job_factory("adm-b", "run-edit")
    prefix, payload, sig = request.ticket.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["expires_at"] += 10 ** 6
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _refused(silo_io("adm-b"), request.model_copy(update={"ticket": f"{prefix}.{edited}.{sig}"}),
             "ticket.signature", "run-edit")


@pytest.mark.parametrize("field, value, rule", [
    ("silo", "someone-else", "ticket.silo"), ("round", 7, "ticket.round"), ("nonce", "old", "ticket.nonce"),
    ("code_hash", "0" * 64, "ticket.code_hash"),
])
def test_ticket_for_another_job_is_refused(silo_with_data, silo_io, job_factory, trust, field, value, rule):
    name = f"adm-t-{field.replace('_', '')}"
    silo_with_data(name)
    request = job_factory(name, f"run-{field.replace('_', '')}")
    ticket = _ticket(trust.orchestrator, request, **{field: value})
    _refused(silo_io(name), request.model_copy(update={"ticket": ticket}), rule, repr(value))


def _crafted_model(silos, own_service, attacker: str, run: str, bundle: bytes) -> tuple[str, str]:
    """A starting model an attacker crafted (the bundle's tensors, every weight 0.5), in the attacker's own
    storage account: (read URL, sha256)."""
    import numpy as np
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    from fedfunc.security.bundle import open_bundle
    from fedfunc.weights import decode, encode, sha256

    crafted = encode({k: np.full_like(v, 0.5) for k, v in decode(open_bundle(bundle).weights())[0].items()})
    service = own_service(attacker)
    blob = service.get_blob_client(layout.OUTBOX, f"models/{run}/round-0000/global.safetensors")
    blob.upload_blob(crafted, overwrite=True)
    creds = read_credentials(silo_home(silos.home_root, attacker))
    sas = generate_blob_sas(creds.account, layout.OUTBOX, blob.blob_name, account_key=service.credential.account_key,
                            permission=BlobSasPermissions(read=True),
                            expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    return f"{blob.url}?{sas}", sha256(crafted)


def test_a_genuine_ticket_with_a_swapped_model_is_refused(silo_with_data, silos, silo_io, job_factory, own_service,
                                                         signed_bundle):
    """The orchestrator ticketed this job for its global model; a request pointing the silo at a crafted
    model in another account (with that model's hash, or the ticket's) is refused before any data is read,
    and the round's slot stays untouched (the ticket does not speak for this request)."""
    silo_with_data("adm-model")
    silos("adm-crafter")
    url, digest = _crafted_model(silos, own_service, "adm-crafter", "run-swap", signed_bundle)
    request = job_factory("adm-model", "run-swap")
    failed = _refused(silo_io("adm-model"), request.model_copy(update={"model_url": url, "model_sha256": digest}),
                      "ticket.model_url", "job ticket for run-swap/r0/adm-model")
    assert f"ticket is for model_url={request.model_url.split('?')[0]!r}" in failed["reason"]
    _refused(silo_io("adm-model"), request.model_copy(update={"model_url": url}), "ticket.model_url", "run-swap")
    _refused(silo_io("adm-model"), request.model_copy(update={"model_sha256": digest}), "ticket.model_sha256",
             "run-swap")


def test_model_bytes_other_than_the_ticket_binds_are_refused(silo_with_data, silo_io, job_factory):
    """The exact ticketed request, but the bytes at the ticketed URL were replaced after the ticket was
    issued: refused by ``ticket.model_bytes`` before any data is read, and the round hears why."""
    from azure.storage.blob import BlobClient

    silo_with_data("adm-bytes")
    request = job_factory("adm-bytes", "run-bytes")
    blob = BlobClient.from_connection_string(job_factory.orch_conn, layout.MODELS, layout.global_model("run-bytes", 0))
    blob.upload_blob(b"not the ticketed model", overwrite=True)
    failed = _refused(silo_io("adm-bytes"), request, "ticket.model_bytes", "global model")
    assert request.model_sha256 in failed["reason"]


def test_expired_and_missing_tickets_are_refused(silo_with_data, silo_io, job_factory, trust):
    silo_with_data("adm-c")
    request = job_factory("adm-c", "run-expired")
    old = _ticket(trust.orchestrator, request, now=datetime.now(timezone.utc) - timedelta(hours=3))
    _refused(silo_io("adm-c"), request.model_copy(update={"ticket": old}), "ticket.expired", "run-expired")
    request = job_factory("adm-c", "run-noticket")
    _refused(silo_io("adm-c"), request.model_copy(update={"ticket": None}), "ticket.missing", "run-noticket")


def test_unsigned_and_untrusted_bundles_are_refused(silo_with_data, silo_io, job_factory, trust):
    silo_with_data("adm-d")
    request = job_factory("adm-d", "run-unsigned")
    unsigned = request.model_copy(update={"bundle": None})  # ticketed as the orchestrator would: no code hash
    unsigned = unsigned.model_copy(update={"ticket": _ticket(trust.orchestrator, request, code_hash="")})
    _refused(silo_io("adm-d"), unsigned, "bundle.unsigned", "names no signed task bundle")
    rogue = build_bundle(task_dir("digits"), keys.generate())
    request = job_factory("adm-d", "run-untrusted", bundle=rogue)
    _refused(silo_io("adm-d"), request, "bundle.untrusted_signer", "is not trusted by this silo's policy")


def _tampered(bundle: bytes, path: str, change) -> bytes:
    """The bundle with one of its files changed after signing (same manifest, same signature)."""
    src, out = zipfile.ZipFile(_io.BytesIO(bundle)), _io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            z.writestr(info, change(data) if info.filename == "files/" + path else data)
    return out.getvalue()


def test_a_file_changed_in_the_stored_bundle_after_signing_is_refused(silo_with_data, silo_io, job_factory,
                                                                      signed_bundle, put_bundle):
    """Someone with write access to the orchestrator's storage swaps one byte of the task's code: the bundle
    keeps its name (its hash is the signed manifest's), and the silo refuses, naming the file."""
    silo_with_data("adm-e")
    request = job_factory("adm-e", "run-tamper")
    put_bundle(_tampered(signed_bundle, "task.py", lambda d: d.replace(b"PIXEL_MAX = 16.0", b"PIXEL_MAX = 17.0")),
               code_hash=request.bundle)
    failed = _refused(silo_io("adm-e"), request, "bundle.file_hash", "task.py")
    assert "changed after signing" in failed["reason"]


def test_an_unmet_requirement_is_refused_naming_it(silo_with_data, silo_io, job_factory, trust, tmp_path):
    silo_with_data("adm-f")
    folder = tmp_path / "digits"
    shutil.copytree(task_dir("digits"), folder)
    toml = folder / "task.toml"
    toml.write_text(toml.read_text().replace('"numpy>=1.24"', '"numpy>=1.24", "torch==0.0.1"'))
    request = job_factory("adm-f", "run-req", bundle=build_bundle(folder, trust.scientist))
    failed = _refused(silo_io("adm-f"), request, "bundle.requirements", "torch==0.0.1")
    assert "no package is installed at job time" in failed["reason"]


def test_a_bundle_for_another_task_is_refused(silo_with_data, silo_io, job_factory, trust):
    silo_with_data("adm-g", allowed_tasks=["digits", "breast_cancer"])
    request = job_factory("adm-g", "run-other", bundle=build_bundle(task_dir("breast_cancer"), trust.scientist))
    _refused(silo_io("adm-g"), request, "bundle.task", "task 'digits'")


@pytest.mark.parametrize("edit, rule, named", [
    (lambda code: code + "\nraise RuntimeError('no GPU here')\n", "task.import", "RuntimeError: no GPU here"),
    (lambda code: code.replace("def read_data", "def read_dataset"), "task.interface", "read_data"),
    (lambda code: code.replace("    def optimizer", "    def train(self, model, dataset, *, seed):\n"
                                                    "        model.append(nn.Linear(10, 3))\n"
                                                    "        return {'loss': 0.1}\n\n    def optimizer"),
     "task.weights", "'3.bias'"),
])
def test_task_code_failures_fail_the_job_with_the_reason(silo_with_data, silo_io, job_factory, trust, tmp_path,
                                                         edit, rule, named):
    """A task that fails to import, lacks a required method, or returns weights other than its initial
    ones: the silo publishes failed.json with the rule and the reason (the round goes on without it)."""
    name = f"adm-{rule.split('.')[1][:6]}"
    silo_with_data(name)
    folder = tmp_path / "digits"
    shutil.copytree(task_dir("digits"), folder)
    (folder / "task.py").write_text(edit((folder / "task.py").read_text()))
    # A task whose own train step grows its model signs fine; code that cannot load is packed directly
    # (`fedfunc sign` would refuse it), as a scientist's stale bundle or another tool might have.
    bundle = build_bundle(folder, trust.scientist) if rule == "task.weights" else _sign_without_loading(folder, trust)
    io = silo_io(name)
    request = job_factory(name, f"run-{name}", bundle=bundle)
    with pytest.raises(JobFailed) as err:
        run_job(request, io)
    assert err.value.rule == rule and named in err.value.reason, err.value.reason
    failed = json.loads(io.outbox.read(request.outbox_prefix + layout.FAILED))
    assert failed["rule"] == rule and named in failed["reason"]
    assert _outbox_names(io, request) == [layout.FAILED]


def _sign_without_loading(folder, trust) -> bytes:
    """A bundle of ``folder``'s files whose code does not load (signing refuses to build it, so pack directly)."""
    from fedfunc.security.bundle import open_bundle, pack
    from fedfunc.tasks.folder import read_task_folder

    good = open_bundle(build_bundle(task_dir("digits"), trust.scientist)).verify(None)
    toml, files = read_task_folder(folder)
    return pack(task=toml.name, entry=toml.entry, num_classes=10, requirements=toml.requirements,
                config=good.config.model_dump(), files=files, weights=good.weights, key=trust.scientist)


def test_policy_refusals_name_the_rule(silo_with_data, silo_io, job_factory):
    silo_with_data("adm-h", allowed_tasks=["breast_cancer"])
    _refused(silo_io("adm-h"), job_factory("adm-h", "run-task"), "policy.allowed_tasks", "task 'digits'")
    silo_with_data("adm-i", min_privacy={"max_epsilon": 8.0})
    failed = _refused(silo_io("adm-i"), job_factory("adm-i", "run-dp"), "policy.min_privacy", "run-dp")
    assert "differential privacy is not available yet" in failed["reason"]


def test_daily_round_limit(silo_with_data, silo_io, job_factory):
    silo_with_data("adm-j", max_rounds_per_day=1)
    io = silo_io("adm-j")
    run_job(job_factory("adm-j", "run-day1"), io)
    run_job(job_factory("adm-j", "run-day1"), silo_io("adm-j"))  # a re-run of a finished job is a no-op, not a new round
    _refused(silo_io("adm-j"), job_factory("adm-j", "run-day2"), "policy.max_rounds_per_day", "limit 1")


def test_a_job_for_another_silo_is_refused_by_this_silos_policy(silo_with_data, silo_io, job_factory, trust):
    """Silo B's request run with silo A's home (A's key): refused before anything is read — its ticket
    names B, and A's policy names A."""
    silo_with_data("adm-k")
    silo_with_data("adm-l")
    request = job_factory("adm-l", "run-cross")
    with pytest.raises(JobFailed) as err:
        run_job(request, silo_io("adm-k"))
    assert err.value.rule == "ticket.silo" and "'adm-l'" in err.value.reason


def test_missing_policy_refuses_everything(silo_with_data, silo_io, job_factory, own_service):
    silo_with_data("adm-m")
    own_service("adm-m").get_blob_client("policy", "policy.json").delete_blob()
    _refused(silo_io("adm-m"), job_factory("adm-m", "run-nopolicy"), "policy.missing", "policy/policy.json")


def test_forged_ticket_through_the_local_backend(silo_with_data, silo_io, job_factory, silos, wait_job_ended):
    """The same refusal from a real detached silo process (worker and supervisor): the silo's trail names
    the rule, and nothing at all lands in the round's slot — a forged job cannot speak for the silo."""
    silo_with_data("adm-n")
    request = job_factory("adm-n", "run-forged-proc")
    request = request.model_copy(update={"ticket": _ticket(keys.generate(), request)})
    backend = LocalProcessBackend(silos.home_root)
    backend.submit(request)
    wait_job_ended(backend.pid(request.job_key))
    io = silo_io("adm-n")
    refusals = [e for e in SiloAuditTrail(io.outbox, "adm-n").recent() if e["job"] == request.job_key]
    assert [e["detail"]["rule"] for e in refusals if e["kind"] == "job_refused"] == ["ticket.untrusted_issuer"]
    assert _outbox_names(io, request) == []


def test_the_silo_side_runs_in_the_job_and_is_recorded_in_the_update(silo_with_data, silo_io, job_factory, trust):
    """A bundle signed with FedProx's μ, delta and a clip: the job trains with the proximal term, sends a
    clipped delta, and the update's metadata says so — in the order the steps ran, the silo's own first."""
    from fedfunc.pipeline import from_metadata
    from fedfunc.weights import decode

    bundle = build_bundle(task_dir("digits"), trust.scientist, {"epochs": 1, "lr": 0.05, "batch_size": 32},
                          proximal_mu=0.05, transforms=[{"name": "delta"}], clip_norm=0.02)
    silo_with_data("pipe-a", update_transforms=[{"name": "clip", "options": {"max_norm": 0.01}}])
    io, request = silo_io("pipe-a"), job_factory("pipe-a", "run-pipe-a", bundle=bundle)
    run_job(request, io)
    arrays, meta = decode(io.outbox.read(request.outbox_prefix + layout.UPDATE))
    kind, history = from_metadata(meta)
    assert kind == "delta"
    assert [(s.name, dict(s.options)) for s in history] == [
        ("proximal", {"mu": 0.05}), ("clip", {"max_norm": 0.01}), ("delta", {}), ("clip", {"max_norm": 0.02})]
    assert history[1].observed == {"clipped": True} and history[3].observed == {"clipped": False}
    assert 0.0099 < sum(float((a.astype("float64") ** 2).sum()) for a in arrays.values()) ** 0.5 <= 0.01


def test_a_silo_whose_own_transforms_cannot_chain_with_the_signed_ones_refuses_the_job(silo_with_data, silo_io,
                                                                                       job_factory, trust):
    bundle = build_bundle(task_dir("digits"), trust.scientist, transforms=[{"name": "delta"}])
    silo_with_data("pipe-b", update_transforms=[{"name": "delta"}])
    failed = _refused(silo_io("pipe-b"), job_factory("pipe-b", "run-pipe-b", bundle=bundle),
                      "policy.update_transforms", "transforms")
    assert "transform delta takes a weights payload, not delta" in failed["reason"]
