"""Domain events: what fedfunc tells other systems, as CloudEvents 1.0 on an Event Grid custom topic.

One fact, one event id: the id is made from the run, round, silo and kind (``run:{run}:RoundCompleted:{r}``),
so a replayed orchestration or a retried publish sends the same id again and a subscriber de-duplicates
by it (delivery is at-least-once). Data holds references (blob paths, hashes) and figures, never weights
or data; silo-written text (a failure reason) is cut to ``MAX_TEXT``. The schemas below are documented
in ``docs/events.md``; ``SCHEMA`` names their version in each event's ``dataschema``.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fedfunc import layout
from fedfunc.contracts import ModelRef
from fedfunc.protocol import RoundResult, RunFact, SiloFact, SiloState

TYPE_PREFIX = "fedfunc."
SCHEMA = "urn:fedfunc:events:v1"
EVENT_TYPES = ("RunStarted", "RoundCompleted", "RunCompleted", "RunFailed", "RunCancelled",
               "SiloOnboarded", "SiloDisabled", "UpdateRejected")
MAX_TEXT = 1000
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.:-]")   # event ids are also Table row keys: no / \ # ? or controls


def _text(value: str | None) -> str | None:
    return None if value is None else (value if len(value) <= MAX_TEXT else value[:MAX_TEXT - 1] + "…")


def _blob(container: str, path: str) -> str:
    return f"{container}/{path}"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunStartedData(_Data):
    run: str
    task: str | None
    strategy: str
    rounds: int
    silos: list[str] | Literal["all"]
    quorum: float
    spec: str                      # the spec blob, e.g. runs/{run}/spec.json
    code_hash: str | None = None   # the signed task bundle's hash


class SiloSummary(_Data):
    state: SiloState
    num_samples: int | None = None
    reason: str | None = None
    seconds: float | None = None


class RoundCompletedData(_Data):
    run: str
    round: int
    metrics: dict[str, float | int]
    num_samples: int
    silos: dict[str, SiloSummary]
    model: ModelRef                # the global model this round produced
    aggregate: str                 # the round's aggregation record blob
    started: datetime | None = None
    ended: datetime | None = None


class RunEndedData(_Data):
    """``RunCompleted``, ``RunFailed`` and ``RunCancelled``."""

    run: str
    rounds_completed: int | None = None
    metrics: dict[str, float | int] | None = None
    model: ModelRef | None = None  # the last good global model
    report: dict[str, str] | None = None
    error: str | None = None
    stop_reason: str | None = None


class UpdateRejectedData(_Data):
    run: str
    round: int
    silo: str
    reason: str


class SiloData(_Data):
    silo: str
    compute: str | None = None


DATA_SCHEMAS: dict[str, type[_Data]] = {
    "RunStarted": RunStartedData, "RoundCompleted": RoundCompletedData, "RunCompleted": RunEndedData,
    "RunFailed": RunEndedData, "RunCancelled": RunEndedData, "UpdateRejected": UpdateRejectedData,
    "SiloOnboarded": SiloData, "SiloDisabled": SiloData,
}


class DomainEvent(BaseModel):
    """One event before it has a source: the id, type, subject and time are fixed by the fact."""

    model_config = ConfigDict(frozen=True)
    id: str
    kind: str
    subject: str
    time: datetime
    data: dict

    def cloud_event(self, source: str) -> dict:
        """The CloudEvents 1.0 JSON form ``EventGridPublisherClient.send`` posts."""
        return {"specversion": "1.0", "id": self.id, "source": source, "type": TYPE_PREFIX + self.kind,
                "subject": self.subject, "time": self.time.isoformat(), "datacontenttype": "application/json",
                "dataschema": f"{SCHEMA}:{self.kind}", "data": self.data}


def _event(kind: str, key: str, subject: str, time: datetime, data: _Data) -> DomainEvent:
    return DomainEvent(id=_UNSAFE_KEY.sub("_", key), kind=kind, subject=subject, time=time,
                       data=data.model_dump(mode="json", exclude_none=True))


def _round_data(run: str, result: RoundResult) -> RoundCompletedData:
    return RoundCompletedData(
        run=run, round=result.round, metrics=result.metrics, num_samples=result.num_samples,
        silos={s: SiloSummary(state=o.state, num_samples=o.num_samples, reason=_text(o.reason), seconds=o.seconds)
               for s, o in sorted(result.silos.items())},
        model=result.model, aggregate=_blob(layout.RUNS, layout.aggregate_record(run, result.round)),
        started=result.started, ended=result.ended)


def events_for(fact: RunFact | SiloFact) -> list[DomainEvent]:
    """The domain events a fact makes (``RoundCompleted`` also makes one ``UpdateRejected`` per rejected silo)."""
    if isinstance(fact, SiloFact):
        return [_event(fact.kind, f"silo:{fact.silo}:{fact.kind}:{fact.occurrence}", f"silos/{fact.silo}", fact.at,
                       SiloData(silo=fact.silo, compute=fact.compute))]
    run, subject = fact.run_id, f"runs/{fact.run_id}"
    if fact.kind == "RunStarted":
        spec = fact.spec
        return [_event("RunStarted", f"run:{run}:RunStarted", subject, fact.at, RunStartedData(
            run=run, task=spec.task, strategy=spec.strategy.name, rounds=spec.rounds, silos=spec.silos,
            quorum=spec.quorum, spec=_blob(layout.RUNS, layout.run_spec(run)), code_hash=spec.bundle))]
    if fact.kind == "RoundCompleted":
        r = fact.result
        round_subject = f"{subject}/rounds/{r.round}"
        events = [_event("RoundCompleted", f"run:{run}:RoundCompleted:{r.round}", round_subject, fact.at,
                         _round_data(run, r))]
        for silo, outcome in sorted(r.silos.items()):
            if outcome.state == "rejected":
                events.append(_event("UpdateRejected", f"run:{run}:UpdateRejected:{r.round}:{silo}",
                                     f"{round_subject}/silos/{silo}", fact.at, UpdateRejectedData(
                                         run=run, round=r.round, silo=silo, reason=_text(outcome.reason) or "")))
        return events
    return [_event(fact.kind, f"run:{run}:{fact.kind}", subject, fact.at, RunEndedData(
        run=run, rounds_completed=fact.rounds_completed, metrics=fact.metrics, model=fact.model, report=fact.report,
        error=_text(fact.error), stop_reason=fact.stop_reason))]
