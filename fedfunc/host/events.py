"""History events in the shape the Durable SDK replays (see docs/durable-protocol.md)."""
from __future__ import annotations

from datetime import datetime, timezone

EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_TERMINATED = 2
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_CREATED = 7
SUB_COMPLETED = 8
SUB_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_RAISED = 15
CONTINUE_AS_NEW = 16

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def parse_iso(text: str) -> datetime:
    """Parse the SDK's timestamps (`...Z`, with or without fractions)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def event(event_type: int, event_id: int = -1, **fields) -> dict:
    return {"EventType": event_type, "EventId": event_id, "IsPlayed": False,
            "Timestamp": iso(utcnow()), **fields}
