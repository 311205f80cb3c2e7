"""Timer triggers, Event Grid triggers (webhook and local subscriptions fed by the storage
watcher on Azurite) and blob triggers with source=EventGrid."""
from __future__ import annotations

import time
import uuid

import pytest
import requests
from azure.storage.blob import BlobServiceClient
from host_helpers import APPS, MASTER_KEY, features_env, lines

from fedfunc.host.testing import HostProcess, wait_until

KEY = {"x-functions-key": MASTER_KEY}
SUBS = "/runtime/webhooks/eventgrid/subscriptions"


def upload(account, container: str, name: str, data: bytes) -> None:
    service = BlobServiceClient.from_connection_string(account.connection_string)
    c = service.get_container_client(container)
    if not c.exists():
        c.create_container()
    c.upload_blob(name, data, overwrite=True)


def test_timer_trigger_run_on_startup_and_past_due_after_downtime(tmp_path, azurite):
    (tmp_path / "out").mkdir()
    env = features_env(tmp_path / "out", azurite, TICK_SCHEDULE="*/1 * * * * *")
    host = HostProcess(APPS / "features", tmp_path / "state.sqlite", env=env).start()
    try:
        ticks = wait_until(lambda: len(lines(tmp_path / "out", "tick")) >= 2 and lines(tmp_path / "out", "tick"))
        assert ticks[0]["past_due"] is False  # run_on_startup
        host.kill()
        time.sleep(2.5)  # occurrences missed while down
        before = len(lines(tmp_path / "out", "tick"))
        host.start()
        after = wait_until(lambda: len(lines(tmp_path / "out", "tick")) > before and lines(tmp_path / "out", "tick"))
        assert after[before]["past_due"] is True
    finally:
        host.stop()


def test_bad_schedule_is_a_clear_error_at_start(tmp_path, azurite):
    (tmp_path / "out").mkdir()
    env = features_env(tmp_path / "out", azurite, TICK_SCHEDULE="every minute")
    with pytest.raises(RuntimeError, match="timer trigger 'tick': schedule 'every minute' is not a six-field"):
        HostProcess(APPS / "features", tmp_path / "state.sqlite", env=env).start()


def test_events_posted_by_hand_to_the_webhook(features):
    event = {"id": "e-1", "subject": "/manual/1", "eventType": "Custom.Thing", "eventTime": "2026-01-01T00:00:00Z",
             "dataVersion": "1", "topic": "/local/topic", "data": {"n": 1}}
    url = features.url("/runtime/webhooks/eventgrid")
    assert requests.post(url, params={"functionName": "on_event"}, json=[event], headers=KEY).status_code == 200
    assert {"id": "e-1", "subject": "/manual/1", "type": "Custom.Thing", "topic": "/local/topic",
            "data": {"n": 1}} in lines(features.out, "on_event")
    assert requests.post(url, params={"functionName": "on_event"}, data="{oops", headers=KEY).status_code == 400
    assert requests.post(url, params={"functionName": "nope"}, json=[event], headers=KEY).status_code == 404
    assert requests.post(url, params={"functionName": "on_event"}, json=[event]).status_code == 401
    validation = {"id": "v", "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                  "data": {"validationCode": "abc"}}
    r = requests.post(url, params={"functionName": "on_event"}, json=[validation],
                      headers={**KEY, "aeg-event-type": "SubscriptionValidation"})
    assert r.json() == {"validationResponse": "abc"}


def test_subscription_turns_new_blobs_into_blob_created_events(features, azurite):
    account = azurite.silo_accounts[1]
    upload(account, "outbox", "before.txt", b"old")  # exists before the subscription: no event
    spec = {"function": "on_event", "connection": account.connection_string, "container": "outbox",
            "subject_begins_with": "/blobServices/default/containers/outbox/blobs/runs/",
            "subject_ends_with": ".safetensors"}
    time.sleep(1.1)  # blob times have one-second resolution
    r = requests.put(features.url(f"{SUBS}/silo-a"), json=spec, headers=KEY)
    assert r.status_code == 200 and "AccountKey=***" in r.json()["connection"]
    upload(account, "outbox", "runs/r1/update.safetensors", b"weights")
    upload(account, "outbox", "runs/r1/metrics.json", b"{}")  # filtered out by the suffix
    wait_until(lambda: [e for e in lines(features.out, "on_event") if e["topic"].endswith(account.name)], what="event")
    upload(account, "outbox", "runs/r1/zz-later.safetensors", b"later")  # its event proves the watcher listed again
    wait_until(lambda: [e for e in lines(features.out, "on_event") if e["subject"].endswith("/zz-later.safetensors")],
               what="event for a later blob")
    got = [e for e in lines(features.out, "on_event")
           if e["topic"].endswith(account.name) and not e["subject"].endswith("/zz-later.safetensors")]
    assert len(got) == 1, got  # still exactly one event for the first blob
    e = got[0]
    assert e["type"] == "Microsoft.Storage.BlobCreated"
    assert e["topic"] == ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
                          f"Microsoft.Storage/storageAccounts/{account.name}")
    assert e["subject"] == "/blobServices/default/containers/outbox/blobs/runs/r1/update.safetensors"
    assert e["data"]["url"] == f"{account.blob_url}/outbox/runs/r1/update.safetensors"
    assert e["data"]["contentLength"] == 7 and e["data"]["eTag"] and e["data"]["sequencer"]
    listed = requests.get(features.url(SUBS), headers=KEY).json()
    assert [s["name"] for s in listed if s["name"] == "silo-a"] == ["silo-a"]
    assert requests.delete(features.url(f"{SUBS}/silo-a"), headers=KEY).status_code == 200
    assert requests.get(features.url(f"{SUBS}/silo-a"), headers=KEY).status_code == 404


def test_bad_subscription_names_the_field(features):
    r = requests.put(features.url(f"{SUBS}/bad"), json={"function": "hello", "connection": "x", "container": "c"},
                     headers=KEY)
    assert r.status_code == 400 and "field 'function'" in r.json()["error"]
    r = requests.put(features.url(f"{SUBS}/bad"), json={"function": "on_event", "container": "c"}, headers=KEY)
    assert r.status_code == 400 and "field 'connection'" in r.json()["error"]


def test_blob_trigger_with_event_grid_source(features, azurite):
    name = f"{uuid.uuid4().hex}.txt"
    upload(azurite.silo_accounts[0], "uploads", name, b"hello blob")
    got = wait_until(lambda: [x for x in lines(features.out, "on_upload") if x["name"] == f"uploads/{name}"])
    assert got == [{"name": f"uploads/{name}", "content": "hello blob"}]


def test_failed_delivery_is_retried(features, azurite):
    """The app fails the first delivery of any subject ending in fail-once*."""
    hand = {"id": "fail-1", "subject": "/manual/fail-once-hand", "eventType": "Custom", "data": {}}
    url = features.url("/runtime/webhooks/eventgrid")
    assert requests.post(url, params={"functionName": "on_event"}, json=[hand], headers=KEY).status_code == 500
    assert requests.post(url, params={"functionName": "on_event"}, json=[hand], headers=KEY).status_code == 200

    account = azurite.silo_accounts[2]
    upload(account, "retry", "seed", b"")
    time.sleep(1.1)
    spec = {"function": "on_event", "connection": account.connection_string, "container": "retry"}
    assert requests.put(features.url(f"{SUBS}/retrying"), json=spec, headers=KEY).status_code == 200
    upload(account, "retry", "fail-once.bin", b"x")
    delivered = wait_until(lambda: [e for e in lines(features.out, "on_event") if e["subject"].endswith("/fail-once.bin")])
    assert len(delivered) == 1 and len(lines(features.out, "failed-fail-once.bin")) == 1


def test_python_helper_in_process_and_over_http(features, azurite, monkeypatch):
    from fedfunc.host import subscriptions
    account = azurite.silo_accounts[4]
    upload(account, "helper", "seed", b"")
    time.sleep(1.1)
    spec = {"function": "on_event", "connection": account.connection_string, "container": "helper"}
    r = requests.post(features.url("/api/subscribe/from-app"), json=spec)  # in-process path
    assert r.status_code == 200 and r.json()["name"] == "from-app"
    monkeypatch.setenv("FEDFUNC_HOST_URL", features.origin)  # from another process: HTTP path
    monkeypatch.setenv("FEDFUNC_HOST_MASTER_KEY", MASTER_KEY)
    assert "from-app" in [s["name"] for s in subscriptions.list_subscriptions()]
    upload(account, "helper", "x.bin", b"x")
    wait_until(lambda: [e for e in lines(features.out, "on_event") if e["subject"].endswith("/helper/blobs/x.bin")])
    assert subscriptions.delete_subscription("from-app") is True
    assert subscriptions.delete_subscription("from-app") is False


def test_event_grid_function_with_durable_client_raises_an_event(features):
    from host_helpers import finished, start
    payload = start(features, "waiter", "eg-raise")
    event = {"id": "r-1", "subject": "/runs/x/update.safetensors", "eventType": "Microsoft.Storage.BlobCreated",
             "data": {"instance": "eg-raise"}}
    r = requests.post(features.url("/runtime/webhooks/eventgrid"), params={"functionName": "raise_from_event"},
                      json=[event], headers=KEY)
    assert r.status_code == 200, r.text
    assert finished(payload)["output"] == {"event": {"subject": "/runs/x/update.safetensors"}}


def test_subscription_with_account_url_and_sas_token(features, azurite):
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
    account = azurite.silo_accounts[5]
    upload(account, "sas", "seed", b"")
    sas = generate_account_sas(account.name, account.key, ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, list=True),
                               expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    time.sleep(1.1)
    spec = {"function": "on_event", "connection": f"{account.blob_url}?{sas}", "container": "sas"}
    r = requests.put(features.url(f"{SUBS}/by-sas"), json=spec, headers=KEY)
    assert r.status_code == 200 and "sig=***" in r.json()["connection"]
    upload(account, "sas", "new.bin", b"abc")
    got = wait_until(lambda: [e for e in lines(features.out, "on_event") if e["subject"].endswith("/sas/blobs/new.bin")])
    assert got[0]["topic"].endswith(f"/storageAccounts/{account.name}")
    assert got[0]["data"]["url"] == f"{account.blob_url}/sas/new.bin"  # no SAS token in the event
