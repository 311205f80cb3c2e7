"""What the drain needs of a sink: a ``target`` to name in logs, one delivery call, and two ways to fail."""
from __future__ import annotations

from typing import Protocol

from fedfunc.observe.tracking import TrackingWork


class Unreachable(Exception):
    """The sink did not answer, or answered "later": deliver again after a back-off."""


class Refused(Exception):
    """The sink answered "no" (credentials, schema, target, invalid values): the same delivery cannot
    succeed, so it is set aside with this reason instead of being retried."""


class EventSink(Protocol):
    target: str

    def send(self, events: list[dict]) -> None:
        """Publish CloudEvents as one batch: all land, or it raises."""


class TrackingSink(Protocol):
    target: str

    def apply(self, work: TrackingWork) -> None:
        """Log ``work`` to its run's tracking run, idempotently."""
