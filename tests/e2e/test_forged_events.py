"""An Event Grid event is a hint, never proof, on the real system (Azurite + the Function App on
``fedfunc host`` + local silo processes): forged BlobCreated events for a silo's update and failure note
that are not in its outbox change nothing in the round, and the silo's real update, landing later, counts."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from fedfunc import layout
from fedfunc.backends.local import LocalProcessBackend
from fedfunc.silo.home import read_credentials, silo_home
from fedfunc.storage import blob_service

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_update"
TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/{}"


def forged(account: str, path: str) -> dict:
    """A BlobCreated event exactly as Event Grid would send it, for a blob that does not exist."""
    return {"id": str(uuid.uuid4()), "topic": TOPIC.format(account), "eventType": "Microsoft.Storage.BlobCreated",
            "subject": f"/blobServices/default/containers/{layout.OUTBOX}/blobs/{path}", "eventTime": "2030-01-01T00:00:00Z",
            "dataVersion": "", "metadataVersion": "1",
            "data": {"api": "PutBlob", "eTag": "0x8DCAFEBABE", "contentLength": 1234, "blobType": "BlockBlob",
                     "url": f"http://127.0.0.1/{account}/{layout.OUTBOX}/{path}"}}


def test_forged_events_for_missing_blobs_change_nothing_in_the_round(stack, spec):
    victim = "site-3"
    run = stack.start_run(spec(run_id="e2e-forged-events"))
    collecting = stack.wait_round(run, 0)
    job = collecting["current_round"]["jobs"][victim]
    backend = LocalProcessBackend(stack.home)
    backend.cancel(job)  # hold the victim's real job, so its update can only land after the forgeries
    creds = read_credentials(silo_home(stack.home, victim))
    outbox = blob_service(creds.connection_string).get_container_client(layout.OUTBOX)
    prefix = layout.outbox_prefix(run, 0, victim)
    if any(outbox.get_blob_client(prefix + name).exists() for name in (layout.UPDATE, layout.FAILED)):
        pytest.skip("the real job published before it could be held")

    for name in (layout.UPDATE, layout.FAILED):
        stack.api("POST", WEBHOOK, [forged(creds.account, prefix + name)], role=None, expect=(200,))
    current = stack.run_status(run)["current_round"]  # the webhook answers once on_update has run
    assert victim in current["missing"], current
    assert victim not in current["received"] and victim not in current["failed"], current

    # The silo's real job, run again by the silo (its own home and environment), publishes its update.
    request_file = stack.home / "jobs" / f"{job}.request.json"
    done = subprocess.run([sys.executable, "-m", "fedfunc", "silo-job", "--request", str(request_file)],
                          env=backend._environment(victim), cwd=silo_home(stack.home, victim),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    assert status["history"][0]["silos"][victim]["state"] == "received"
    record = json.loads(stack.download(layout.RUNS, layout.aggregate_record(run, 0)))
    assert victim in record["accepted"] and record["rejected"] == []
