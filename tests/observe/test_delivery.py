"""The outbox and its drain, on real Table storage, with the real ``EventGridPublisherClient`` and a real
MLflow store: an unreachable sink is retried until it answers (nothing lost, nothing sent twice), a
refusal is set aside with its reason (one bad event does not hold back the others), and a fact recorded
again is owed once."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.credentials import AzureKeyCredential
from mlflow.tracking import MlflowClient

from fedfunc.observe.delivery import Observer
from fedfunc.observe.mlflow_tracker import MlflowTracker
from fedfunc.observe.outbox import ObservationOutbox
from fedfunc.observe.publisher import EventGridPublisher
from fedfunc.observe.tracking import RUN_TAG

KEY = "topic-key"


class Topic:
    """An HTTP endpoint answering as an Event Grid topic does to a publish: 401 without its key, 400 for
    a batch holding an event it cannot take (here: one whose subject says "poison"), else 200 — and,
    until ``up``, refusing connections (its port is bound, not listening)."""

    def __init__(self):
        self.accepted: list[dict] = []
        topic = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("aeg-sas-key") != KEY:
                    status = 401
                elif any("poison" in (e.get("subject") or "") for e in events):
                    status = 400
                else:
                    status = 200
                    topic.accepted += events
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.server_bind()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        self.thread = None

    def up(self):
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        if self.thread:
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def topic():
    t = Topic()
    yield t
    t.close()


@pytest.fixture
def outbox(tables):
    """A fresh table per test, so states are this test's alone."""
    name = f"obs{uuid.uuid4().hex[:12]}"
    yield ObservationOutbox(tables.create_table(name))
    tables.delete_table(name)


def later(seconds: float = 120) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def due_now(outbox: ObservationOutbox, sink: str) -> None:
    """Make every pending entry's back-off run out now (instead of sleeping through it)."""
    for e in outbox.pending(sink):
        outbox.table.update_entity({"PartitionKey": sink, "RowKey": e.key, "next_at": datetime.now(timezone.utc)})


def test_events_wait_while_the_topic_is_unreachable_then_go_once(outbox, topic, run_facts, caplog):
    observer = Observer(outbox, events=EventGridPublisher(topic.endpoint, AzureKeyCredential(KEY)))
    facts = run_facts()
    for fact in facts[:3]:
        observer.record(fact)
        drained = observer.drain()          # connection refused
        assert drained.delivered == 0 and drained.retrying > 0
    assert topic.endpoint in caplog.text, "the failure is logged with its target"
    assert set(outbox.states("events").values()) == {"pending"}
    assert observer.drain().retrying == 0, "backing off: not tried again at once"
    topic.up()
    for fact in facts:                       # the replay of every fact changes nothing already owed
        observer.record(fact)
    due_now(outbox, "events")
    assert observer.drain().delivered == 5
    assert observer.drain().delivered == 0
    ids = [e["id"] for e in topic.accepted]
    assert sorted(ids) == sorted(outbox.states("events")) and len(set(ids)) == len(ids) == 5
    assert [e["id"] for e in topic.accepted][:2] == ["run:run-a:RunStarted", "run:run-a:RoundCompleted:0"]


def test_a_refused_event_is_set_aside_and_the_rest_go(outbox, topic, run_facts, caplog):
    topic.up()
    observer = Observer(outbox, events=EventGridPublisher(topic.endpoint, AzureKeyCredential(KEY)))
    facts = run_facts()
    poison = facts[1].model_copy(update={"run_id": "poison"})   # its events' subject is runs/poison/...
    for fact in [*facts, poison]:
        observer.record(fact)
    drained = observer.drain()
    assert (drained.delivered, drained.refused) == (5, 1)
    states = outbox.states("events")
    assert states.pop("run:poison:RoundCompleted:0") == "rejected" and set(states.values()) == {"done"}
    assert "refused event run:poison:RoundCompleted:0" in caplog.text and "HTTP 400" in caplog.text
    assert observer.drain().refused == 0, "a refused event is not retried"


def test_a_wrong_key_is_refused_and_not_retried(outbox, topic, run_facts, caplog):
    topic.up()
    observer = Observer(outbox, events=EventGridPublisher(topic.endpoint, AzureKeyCredential("not-the-key")))
    observer.record(run_facts()[0])
    assert observer.drain().refused == 1
    assert outbox.states("events") == {"run:run-a:RunStarted": "rejected"}
    assert "HTTP 401" in caplog.text


def test_tracking_waits_for_an_unreachable_store_then_logs_each_round_once(outbox, store, tmp_path, run_facts, caplog):
    blocker = tmp_path / "mlflow"
    blocker.write_text("a file where the store's folder should be: the store cannot be opened")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    run = f"track-{uuid.uuid4().hex[:8]}"
    facts = run_facts(run)[:3]
    observer = Observer(outbox, tracking=MlflowTracker(uri, "fedfunc", store))
    for fact in facts:
        observer.record(fact)
        assert observer.drain().delivered == 0
    assert f"not logged to {uri}" in caplog.text, "the failure is logged with its target"
    states = outbox.states("tracking")
    assert len(states) == 3 and set(states.values()) == {"pending"}
    blocker.unlink()
    blocker.mkdir()                                   # the store is back
    for fact in facts:
        observer.record(fact)
    due_now(outbox, "tracking")
    assert observer.drain().delivered == 3
    client = MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("fedfunc").experiment_id],
                                  filter_string=f"tags.`{RUN_TAG}` = '{run}'")
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "accuracy")] == [(0, 0.9), (1, 0.91)]


def test_a_runs_tracking_is_logged_in_the_order_of_its_facts(outbox, store, run_facts):
    class Recorder:
        target = "memory://"

        def __init__(self):
            self.applied, self.fail = [], {"run:run-a:track:round:0"}

        def apply(self, work):
            if work.id in self.fail:
                raise ConnectionError("store away")
            self.applied.append(work.id)

    recorder = Recorder()
    observer = Observer(outbox, tracking=recorder)
    for fact in run_facts():
        observer.record(fact)
    assert observer.drain().retrying == 1
    assert recorder.applied == ["run:run-a:track:start"], "round 1 and the end wait for round 0"
    due_now(outbox, "tracking")
    recorder.fail.clear()
    observer.drain()
    assert recorder.applied == ["run:run-a:track:start", "run:run-a:track:round:0", "run:run-a:track:round:1",
                                "run:run-a:track:end"]


def test_a_drain_holding_an_entry_keeps_others_off_it(outbox, run_facts):
    sent = []

    class Sink:
        target = "memory://"

        def send(self, events):
            sent.extend(e["id"] for e in events)

    observer = Observer(outbox, events=Sink())
    observer.record(run_facts()[0])
    (entry,) = outbox.pending("events")
    assert outbox.claim(entry) is not None
    assert outbox.claim(entry) is None, "the second claim of the same version loses"
    assert observer.drain().delivered == 0 and sent == [], "a leased entry is not sent by another drain"
