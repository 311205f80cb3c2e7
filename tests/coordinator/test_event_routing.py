"""on_update's routing: only BlobCreated of an update (or failure note) in a registered silo's own outbox
becomes a round event; everything else is ignored, and repeats map to the same event."""
from __future__ import annotations

from types import SimpleNamespace

import azure.functions as func
import pytest

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


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    monkeypatch.setattr(silo_events, "services", lambda: SimpleNamespace(registry=Registry()))


def event(account="silo01", container="outbox", name="update.safetensors", event_type="Microsoft.Storage.BlobCreated",
          subject=None):
    return func.EventGridEvent(id="e1", data={"eTag": "0x1", "contentLength": 42, "url": "http://x"},
                               topic=TOPIC.format(account), subject=subject or SUBJECT.format(container, name),
                               event_type=event_type, event_time=None, data_version="1")


def test_update_from_the_silos_own_outbox_is_routed_to_its_round():
    instance, name, payload = silo_events.route_outbox_event(event())
    assert instance == "run-1:r3" and name == "update:site-1"
    assert payload == {"path": "runs/run-1/rounds/0003/silos/site-1/update.safetensors", "etag": "0x1", "size": 42,
                       "landed": None, "delivered": None}
    assert silo_events.route_outbox_event(event()) == (instance, name, payload)  # a redelivery is the same event


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
