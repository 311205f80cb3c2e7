"""on_update's routing: only BlobCreated of an update, an evaluation (or failure note) in a registered silo's
own outbox, really there with the event's eTag and size, becomes a round event; everything else is ignored
(the silo keeps waiting), and repeats map to the same event."""
from __future__ import annotations

from types import SimpleNamespace

import azure.functions as func
import pytest

from fedfunc import layout
from fedfunc.coordinator import rounds
from fedfunc.coordinator.services import OutboxBlob
from fedfunc.registry import SiloRecord, UnknownSilo
from triggers import silo_events

TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/{}"
SUBJECT = "/blobServices/default/containers/{}/blobs/runs/run-1/rounds/0003/silos/site-1/{}"


class Registry:
    def get(self, name):
        if name != "site-1":
            raise UnknownSilo(name)
        return SiloRecord(name="site-1", account="silo01", blob_url="http://127.0.0.1/silo01", compute="local",
                          policy_ref="x")


PREFIX = "runs/run-1/rounds/0003/silos/site-1/"


class Audit:
    def __init__(self):
        self.entries = []

    def record(self, kind, **fields):
        self.entries.append((kind, fields))


@pytest.fixture(autouse=True)
def outbox(monkeypatch):
    """site-1's outbox: path → (bytes, eTag); what ``outbox_blob`` and ``outbox_reader`` see."""
    blobs = {PREFIX + "update.safetensors": (b"x" * 42, "0x1"), PREFIX + "evaluation.safetensors": (b"e" * 42, "0x1")}
    audit = Audit()

    def outbox_blob(record, path):
        assert record.name == "site-1"
        return OutboxBlob(etag=blobs[path][1], size=len(blobs[path][0])) if path in blobs else None

    def read(silo, path, max_bytes):
        if len(blobs[path][0]) > max_bytes:
            raise ValueError(f"size: {path} is over the {max_bytes}-byte bound")
        return blobs[path][0]

    reader = lambda: read  # noqa: E731
    manifests = {}  # round 3's manifest, when a test writes one
    store = SimpleNamespace(get_json=lambda container, path: manifests.get(path))
    monkeypatch.setattr(rounds, "_MODES", type(rounds._MODES)())
    monkeypatch.setattr(silo_events, "services", lambda: SimpleNamespace(
        registry=Registry(), outbox_blob=outbox_blob, outbox_reader=reader, audit=audit, store=store))
    return SimpleNamespace(blobs=blobs, audit=audit, manifests=manifests)


def event(account="silo01", container="outbox", name="update.safetensors", event_type="Microsoft.Storage.BlobCreated",
          subject=None, data=None):
    return func.EventGridEvent(id="e1", data={"eTag": "0x1", "contentLength": 42, "url": "http://x"} if data is None
                               else data, topic=TOPIC.format(account), subject=subject or SUBJECT.format(container, name),
                               event_type=event_type, event_time=None, data_version="1")


def test_update_from_the_silos_own_outbox_is_routed_to_its_round():
    instance, name, payload = silo_events.route_outbox_event(event())
    assert instance == "run-1:r3" and name == "update:site-1"
    assert payload == {"path": "runs/run-1/rounds/0003/silos/site-1/update.safetensors", "etag": "0x1", "size": 42,
                       "landed": None, "delivered": None}
    assert silo_events.route_outbox_event(event()) == (instance, name, payload)  # a redelivery is the same event


@pytest.mark.parametrize("manifest", [None, {"silos": [], "evaluators": ["site-1"]},
                                      {"silos": ["site-1"], "evaluate_only": True}])
def test_an_evaluation_is_routed_as_its_own_event(manifest, outbox):
    """From an evaluator, from anyone in an evaluate-only round, or before the round's manifest is found."""
    if manifest:
        outbox.manifests[layout.round_manifest("run-1", 3)] = manifest
    instance, name, payload = silo_events.route_outbox_event(event(name="evaluation.safetensors"))
    assert instance == "run-1:r3" and name == "evaluated:site-1"
    assert payload["path"].endswith("/site-1/evaluation.safetensors")


def test_a_training_jobs_evaluation_is_not_raised_its_update_is(outbox):
    """The round waits for a trainer's update (published right after its evaluation), never its evaluation:
    raising that would only replay the round for nothing."""
    outbox.manifests[layout.round_manifest("run-1", 3)] = {"silos": ["site-1"], "evaluators": ["held"]}
    assert silo_events.route_outbox_event(event(name="evaluation.safetensors")) is None
    assert silo_events.route_outbox_event(event())[1] == "update:site-1"


@pytest.mark.parametrize("ignored", [
    event(account="silo02"),                                   # another account claims site-1's outbox
    event(container="data"),                                   # not the outbox
    event(name="metrics.json"),                                # not the update
    event(event_type="Microsoft.Storage.BlobDeleted"),
    event(subject="/blobServices/default/containers/outbox/blobs/runs/run-1/rounds/0003/silos/site-9/update.safetensors"),
    event(subject="/blobServices/default/containers/outbox/blobs/elsewhere/update.safetensors"),
])
def test_other_events_are_ignored(ignored):
    assert silo_events.route_outbox_event(ignored) is None


@pytest.mark.parametrize("forged", [
    event(name="failed.json", data={"eTag": "0x9", "contentLength": 30}),  # no failure note in the outbox
    event(data={"eTag": "0x2", "contentLength": 42}),                      # another version than the one there
    event(data={"eTag": "0x1", "contentLength": 41}),
    event(data={"eTag": ["0x1"], "contentLength": "42"}),                  # hostile types
])
def test_an_event_for_a_blob_that_is_not_there_as_it_says_is_ignored(forged, outbox):
    assert silo_events.route_outbox_event(forged) is None
    assert outbox.audit.entries == []  # a forged failure note leaves no failure in the trail either


def test_an_event_without_etag_or_size_counts_with_the_blobs_own(outbox):
    routed = silo_events.route_outbox_event(event(data=["not", "an", "object"]))
    assert routed[2] == {"path": PREFIX + "update.safetensors", "etag": "0x1", "size": 42, "landed": None,
                         "delivered": None}


def test_a_real_failure_note_ends_the_wait_with_its_reason(outbox):
    note = b'{"reason": "data/digits/train.safetensors: bad shape [x]", "rule": "data.schema"}'
    outbox.blobs[PREFIX + "failed.json"] = (note, "0x7")
    instance, name, payload = silo_events.route_outbox_event(
        event(name="failed.json", data={"eTag": '"0x7"', "contentLength": len(note)}))
    assert (instance, name) == ("run-1:r3", "failed:site-1")
    assert payload == {"reason": "data/digits/train.safetensors: bad shape [x]", "rule": "data.schema"}
    assert outbox.audit.entries[0][0] == "job_refused"


@pytest.mark.parametrize("note", [b"\xff\xfe", b"[1, 2]", b"[" * 60_000, b" " * 100_000])
def test_an_unreadable_failure_note_that_is_there_still_ends_the_wait(note, outbox):
    outbox.blobs[PREFIX + "failed.json"] = (note, "0x8")
    _, name, payload = silo_events.route_outbox_event(event(name="failed.json", data={}))
    assert name == "failed:site-1" and "failure note unreadable" in payload["reason"]
