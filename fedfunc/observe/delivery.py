"""The observer: a fact is recorded once for each configured sink, then whatever is owed is delivered.

Events go out in batches (at most Event Grid's 1 MB per request); a batch the topic refuses is sent again
event by event, so one bad event does not hold back the others. Tracking work goes to MLflow one unit at
a time and, per run, in the order of the facts: a run's later work waits while earlier work is retried.
Delivery never raises: an unreachable sink is logged with its target and tried again later (every
``observe`` activity and the ``drain_observations`` timer drain), a refusal is logged with its reason and
set aside; either way the run goes on.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fedfunc.observe.events import events_for
from fedfunc.observe.outbox import Entry, ObservationOutbox
from fedfunc.observe.publisher import MAX_BATCH_BYTES
from fedfunc.observe.sinks import EventSink, Refused, TrackingSink, Unreachable
from fedfunc.observe.tracking import TrackingWork, tracking_for
from fedfunc.protocol import RunFact, SiloFact

log = logging.getLogger("fedfunc.observe")


@dataclass
class Drained:
    delivered: int = 0
    retrying: int = 0
    refused: int = 0


def _batches(entries: list[Entry]) -> list[list[Entry]]:
    batches: list[list[Entry]] = []
    size = MAX_BATCH_BYTES
    for entry in entries:
        n = len(json.dumps(entry.payload)) + 2
        if size + n > MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += n
    return batches


class Observer:
    def __init__(self, outbox: ObservationOutbox, *, events: EventSink | None = None, tracking: TrackingSink | None = None,
                 source: str = "/fedfunc"):
        self.outbox, self.events, self.tracking, self.source = outbox, events, tracking, source

    @property
    def enabled(self) -> bool:
        return bool(self.events or self.tracking)

    def record(self, fact: RunFact | SiloFact) -> int:
        """Owe ``fact`` to each configured sink; how many new entries (0 when it was recorded before)."""
        added = 0
        if self.events:
            for event in events_for(fact):
                added += self.outbox.add("events", event.id, event.time, event.cloud_event(self.source))
        if self.tracking and isinstance(fact, RunFact):
            work = tracking_for(fact)
            added += self.outbox.add("tracking", work.id, fact.at, work.model_dump(mode="json"))
        return added

    def drain(self, *, tracking: bool = True) -> Drained:
        """Deliver what is owed; ``tracking=False`` only events (a silo's milestone has no MLflow work)."""
        out = Drained()
        for name, sink, drain in (("events", self.events, self._drain_events),
                                  ("tracking", self.tracking if tracking else None, self._drain_tracking)):
            if sink is None:
                continue
            try:
                drain(out)
            except Exception as e:  # the outbox itself (storage) failed: the next drain tries again
                log.error("observe: draining %s for %s failed: %s: %s", name, sink.target, type(e).__name__, e)
        return out

    def _drain_events(self, out: Drained) -> None:
        claimed = [c for e in self.outbox.pending("events") if e.ready and (c := self.outbox.claim(e))]
        for batch in _batches(claimed):
            self._send(batch, out)

    def _send(self, batch: list[Entry], out: Drained) -> None:
        try:
            self.events.send([e.payload for e in batch])
        except Unreachable as e:
            for entry in batch:
                next_at = self.outbox.retry_later(entry, str(e))
            log.warning("observe: %d event(s) not delivered to %s (attempt %d): %s; retrying from %s",
                        len(batch), self.events.target, batch[0].attempts + 1, e, next_at.isoformat())
            out.retrying += len(batch)
            return
        except Refused as e:
            if len(batch) > 1:   # find the event(s) the topic refuses; the others still go
                for entry in batch:
                    self._send([entry], out)
                return
            self.outbox.reject(batch[0], str(e))
            log.error("observe: %s refused event %s: %s; not retried", self.events.target, batch[0].key, e)
            out.refused += 1
            return
        for entry in batch:
            self.outbox.done(entry)
        out.delivered += len(batch)

    def _drain_tracking(self, out: Drained) -> None:
        waiting: set[str] = set()   # runs whose earlier work has not landed yet
        for entry in self.outbox.pending("tracking"):
            work = TrackingWork.model_validate(entry.payload)
            if work.run in waiting:
                continue
            claimed = self.outbox.claim(entry) if entry.ready else None
            if claimed is None:
                waiting.add(work.run)
                continue
            try:
                self.tracking.apply(work)
            except Refused as e:
                self.outbox.reject(claimed, str(e))
                log.error("observe: %s refused %s: %s; not retried", self.tracking.target, work.id, e)
                out.refused += 1
            except Exception as e:  # unreachable, locked, timed out: the outbox retries it
                next_at = self.outbox.retry_later(claimed, f"{type(e).__name__}: {e}")
                log.warning("observe: %s not logged to %s (attempt %d): %s: %s; retrying from %s", work.id,
                            self.tracking.target, claimed.attempts + 1, type(e).__name__, e, next_at.isoformat())
                waiting.add(work.run)
                out.retrying += 1
            else:
                self.outbox.done(claimed)
                out.delivered += 1
