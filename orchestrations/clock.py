"""The orchestrations' clock: the only time an orchestrator may read, the same on every replay."""
from __future__ import annotations

from datetime import datetime, timezone

import azure.durable_functions as df


def clock(context: df.DurableOrchestrationContext) -> datetime:
    """The current episode's start (from history), UTC-aware: what a round stamps its own steps with."""
    now = context.current_utc_datetime
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)
