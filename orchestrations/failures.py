"""How orchestrations meet failure: the retry policy of idempotent activities, and a failed task's reason."""
from __future__ import annotations

import azure.durable_functions as df

# Activities are idempotent; a transient storage or submit error is retried before it counts.
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


def failure_reason(e: Exception) -> str:
    """A failed activity's or sub-orchestration's own message, without the SDK's serialized payload."""
    return str(e).split("$OutOfProcData$")[0].strip()
