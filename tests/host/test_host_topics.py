"""Local Event Grid custom topics: the real `EventGridPublisherClient` posts to the host with the topic's
key, and the host delivers to subscribed functions and webhooks, at least once, from its store."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient
from azure.eventgrid._legacy._helpers import generate_sas
from host_helpers import APPS, features_env, lines

from fedfunc.host.testing import HostProcess, wait_until

SUBS = "/runtime/webhooks/eventgrid/subscriptions"


def make_topic(host, name: str) -> dict:
    r = requests.put(host.url(f"/admin/eventgrid/topics/{name}"), headers=host.headers)
    assert r.status_code == 200, r.text
    return r.json()


def subscribe(host, name: str, **spec) -> None:
    r = requests.put(host.url(f"{SUBS}/{name}"), json=spec, headers=host.headers)
    assert r.status_code == 200, r.text


def recorded(out, kind: str, **match) -> list:
    return [e for e in lines(out, kind) if all(e.get(k) == v for k, v in match.items())]


class Webhook:
    """A subscriber outside the app: records each POST; answers `status` (changeable)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append({"headers": dict(self.headers), "body": json.loads(body), "answered": hook.status})
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # bound at once, kept
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def test_publisher_client_cloud_events_reach_a_subscribed_function(features):
    topic = make_topic(features, "fl-events")
    assert topic["endpoint"] == features.url("/eventgrid/topics/fl-events/api/events")
    subscribe(features, "rounds-to-fn", topic="fl-events", function="on_cloud_event",
              included_event_types=["fedfunc.RoundCompleted"], subject_begins_with="runs/")
    client = EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(topic["key"]))
    run = uuid.uuid4().hex
    client.send([CloudEvent(source="/fedfunc", type="fedfunc.Other", subject=f"runs/{run}", data={"n": 0}),
                 CloudEvent(source="/fedfunc", type="fedfunc.RoundCompleted", subject=f"elsewhere/{run}", data={}),
                 CloudEvent(source="/fedfunc", type="fedfunc.RoundCompleted", subject=f"runs/{run}", data={"round": 1},
                            id=f"{run}-r1")])
    got = wait_until(lambda: recorded(features.out, "on_cloud_event", id=f"{run}-r1"), what="CloudEvent delivered")
    assert got == [{"id": f"{run}-r1", "type": "fedfunc.RoundCompleted", "source": "/fedfunc",
                    "subject": f"runs/{run}", "data": {"round": 1}}]
    # the filtered-out ones were never queued: the next event of the same batch size arrives alone
    client.send(CloudEvent(source="/fedfunc", type="fedfunc.RoundCompleted", subject=f"runs/{run}", data={}, id=f"{run}-r2"))
    wait_until(lambda: recorded(features.out, "on_cloud_event", id=f"{run}-r2"), what="second event")
    assert [e["id"] for e in lines(features.out, "on_cloud_event") if run in (e.get("subject") or "")] == \
        [f"{run}-r1", f"{run}-r2"]


def test_event_grid_schema_events_and_sas_tokens(features):
    topic = make_topic(features, "grid-schema")
    subscribe(features, "grid-to-fn", topic="grid-schema", function="on_cloud_event")
    token = generate_sas(topic["endpoint"], topic["key"], datetime.now(timezone.utc) + timedelta(hours=1))
    client = EventGridPublisherClient(topic["endpoint"], AzureSasCredential(token))
    event_id = uuid.uuid4().hex
    client.send(EventGridEvent(subject="runs/x", event_type="fedfunc.RunCompleted", data={"ok": True},
                               data_version="1", id=event_id))
    got = wait_until(lambda: recorded(features.out, "on_cloud_event", id=event_id), what="Event Grid event delivered")
    assert got[0]["topic"] == topic["id"] and got[0]["type"] == "fedfunc.RunCompleted"


def test_wrong_key_expired_token_and_bad_events_are_refused(features):
    topic = make_topic(features, "guarded")
    event = CloudEvent(source="/fedfunc", type="t", data={})
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic["endpoint"], AzureKeyCredential("not-the-key")).send(event)
    expired = generate_sas(topic["endpoint"], topic["key"], datetime.now(timezone.utc) - timedelta(minutes=1))
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic["endpoint"], AzureSasCredential(expired)).send(event)
    other = make_topic(features, "guarded-other")
    with pytest.raises(ClientAuthenticationError):  # one topic's key does not open another
        EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(other["key"])).send(event)
    headers = {"aeg-sas-key": topic["key"], "Content-Type": "application/cloudevents-batch+json; charset=utf-8"}
    r = requests.post(topic["endpoint"], params={"api-version": "2018-01-01"}, headers=headers,
                      data=json.dumps([{"id": "1", "source": "/s", "specversion": "1.0"}]))
    assert r.status_code == 400 and "'type'" in r.json()["error"]["message"]
    r = requests.post(topic["endpoint"], headers={**headers, "Content-Type": "application/json"}, data="{oops")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    with pytest.raises(HttpResponseError):
        EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(topic["key"])).send(
            CloudEvent(source="/s", type="big", data="x" * (1024 * 1024)))


def test_bad_topic_subscriptions_name_the_field(features):
    r = requests.put(features.url(f"{SUBS}/t-bad"), json={"topic": "no-such-topic", "function": "on_cloud_event"},
                     headers=features.headers)
    assert r.status_code == 400 and "field 'topic'" in r.json()["error"]
    make_topic(features, "for-bad-subs")
    r = requests.put(features.url(f"{SUBS}/t-bad"), json={"topic": "for-bad-subs", "webhook": "ftp://x"},
                     headers=features.headers)
    assert r.status_code == 400 and "field 'webhook'" in r.json()["error"]
    r = requests.put(features.url(f"{SUBS}/t-bad"), json={"topic": "for-bad-subs", "function": "on_upload"},
                     headers=features.headers)
    assert r.status_code == 400 and "field 'function'" in r.json()["error"]


def test_webhook_subscriber_is_retried_until_it_accepts(features, webhook):
    topic = make_topic(features, "to-webhook")
    subscribe(features, "hook", topic="to-webhook", webhook=webhook.url)
    webhook.status = 503
    client = EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(topic["key"]))
    client.send(CloudEvent(source="/fedfunc", type="fedfunc.RunCompleted", data={"run": "w"}, id="hook-1"))
    wait_until(lambda: webhook.requests, what="first delivery attempt")
    webhook.status = 200
    wait_until(lambda: any(r["answered"] == 200 for r in webhook.requests), what="accepted delivery")
    first, last = webhook.requests[0], webhook.requests[-1]
    assert first["answered"] == 503 and last["body"]["id"] == "hook-1" and last["body"]["data"] == {"run": "w"}
    assert last["headers"]["Content-Type"].startswith("application/cloudevents+json")
    assert last["headers"]["aeg-event-type"] == "Notification" and int(last["headers"]["aeg-delivery-count"]) >= 1


def test_undelivered_topic_events_survive_kill_9(tmp_path, azurite, webhook):
    (tmp_path / "out").mkdir()
    host = HostProcess(APPS / "features", tmp_path / "state.sqlite", env=features_env(tmp_path / "out", azurite)).start()
    try:
        topic = make_topic(host, "durable")
        subscribe(host, "durable-hook", topic="durable", webhook=webhook.url)
        webhook.status = 503
        EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(topic["key"])).send(
            CloudEvent(source="/fedfunc", type="fedfunc.RunCompleted", data={}, id="survivor"))
        wait_until(lambda: webhook.requests, what="a refused attempt")
        host.kill()
        webhook.status = 200
        host.start()  # same port, same keys, same outbox
        wait_until(lambda: any(r["answered"] == 200 and r["body"]["id"] == "survivor" for r in webhook.requests),
                   what="delivery after restart")
        assert requests.get(host.url("/admin/eventgrid/topics/durable"), headers=host.headers).json()["key"] == topic["key"]
    finally:
        host.stop()
