"""The audit trail: append-only orchestrator table (filters, retries append once) and a silo's own log."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from fedfunc.security.audit import AuditLog, SiloAuditTrail, entry
from fedfunc.silo.io import DirOutbox
from fedfunc.storage import table_service


@pytest.fixture
def audit(azurite):
    return AuditLog.create(table_service(azurite.orchestrator.connection_string))


def test_record_and_filter(audit):
    run = f"audit-{uuid.uuid4().hex[:6]}"
    audit.record("ticket_issued", run=run, round=0, silo="alpha", code_hash="ab" * 32)
    audit.record("ticket_issued", run=run, round=0, silo="beta", code_hash="ab" * 32)
    audit.record("artifact_received", run=run, round=0, silo="alpha", sha256="cd" * 32, path="x/update.safetensors")
    audit.record("silo_onboarded", silo="alpha")
    assert [e.silo for e in audit.query(run=run)] == ["alpha", "beta", "alpha"]
    got = audit.query(run=run, silo="alpha", kind="artifact_received")
    assert len(got) == 1 and got[0].detail["sha256"] == "cd" * 32 and got[0].round == 0
    assert got[0].source == "orchestrator"
    assert audit.query(run=run, since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    onboarded = [e for e in audit.query(silo="alpha", kind="silo_onboarded")]
    assert onboarded and onboarded[-1].run is None and onboarded[-1].round is None


def test_a_retried_entry_is_appended_once_and_never_overwritten(audit):
    run = f"audit-{uuid.uuid4().hex[:6]}"
    audit.record("ticket_issued", run=run, round=1, silo="alpha", event_id="ticket:1:alpha", attempt=1)
    audit.record("ticket_issued", run=run, round=1, silo="alpha", event_id="ticket:1:alpha", attempt=2)
    entries = audit.query(run=run)
    assert len(entries) == 1 and entries[0].detail["attempt"] == 1


def test_a_rounds_entries_are_written_together_and_a_retried_batch_keeps_what_is_there(audit):
    """Entries of several runs, more than one transaction holds, all land; a retry of the same batch after
    part of it landed appends only what is missing and leaves the entries already there as they were."""
    runs = [f"audit-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    batch = [entry("artifact_received", run=runs[0], round=0, silo=f"s{i:03d}", event_id=f"received:{i}", attempt=1)
             for i in range(130)] + [entry("update_rejected", run=runs[1], round=0, silo="x", event_id="rejected:x")]
    audit.record_many(batch[:40:3])  # part of it, as a first attempt that failed half-way would leave
    retried = [(e.model_copy(update={"detail": {"attempt": 2}}), row) for e, row in batch]
    audit.record_many(retried)
    got = audit.query(run=runs[0])
    assert sorted(e.silo for e in got) == [f"s{i:03d}" for i in range(130)]
    assert {e.silo for e in got if e.detail["attempt"] == 1} == {f"s{i:03d}" for i in range(0, 40, 3)}
    assert [e.kind for e in audit.query(run=runs[1])] == ["update_rejected"]


def test_silo_trail_appends_json_lines_in_day_files(tmp_path):
    trail = SiloAuditTrail(DirOutbox(tmp_path), "alpha")
    trail.append("job_started", run="r", round=0, job="r-r0-alpha")
    trail.append("artifact_egress", run="r", round=0, job="r-r0-alpha", name="u", sha256="ab" * 32, size=3)
    kinds = [e["kind"] for e in trail.recent()]
    assert kinds == ["job_started", "artifact_egress"]
    day_files = list((tmp_path / "audit").glob("*.jsonl"))
    assert len(day_files) == 1 and len(day_files[0].read_text().splitlines()) == 2
