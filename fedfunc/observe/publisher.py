"""Publishing domain events to an Event Grid custom topic with ``azure-eventgrid``'s ``EventGridPublisherClient``.

The key (``AzureKeyCredential``) locally; on Azure the app's managed identity (``DefaultAzureCredential``,
role *EventGrid Data Sender* on the topic), no key. A send either lands (Event Grid answers 200 for the
whole batch) or fails as ``Unreachable`` (no answer, a timeout, 408, 429, 5xx: retried later) or as
``Refused`` (the topic said no: a wrong key or role, a bad event, an unknown topic: not retried).
"""
from __future__ import annotations

import logging

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.eventgrid import EventGridPublisherClient

from fedfunc.observe.sinks import Refused, Unreachable

TIMEOUTS = {"connection_timeout": 5, "read_timeout": 30}
MAX_BATCH_BYTES = 1024 * 1024     # Event Grid's limit for one publish request


class _IgnoredOptions(logging.Filter):
    """``send`` hands its transport options to the SDK's event model as well, which logs that it ignores them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not a known attribute" not in record.getMessage()


logging.getLogger("azure.eventgrid._legacy._generated._serialization").addFilter(_IgnoredOptions())


def _classify(e: Exception) -> Exception:
    status = getattr(getattr(e, "response", None), "status_code", None) or getattr(e, "status_code", None)
    if isinstance(e, (ServiceRequestError, ServiceResponseError)) or status is None:
        return Unreachable(f"{type(e).__name__}: {e}")
    if status in (408, 429) or status >= 500:
        return Unreachable(f"HTTP {status}: {e}")
    return Refused(f"HTTP {status}: {e}")


class EventGridPublisher:
    def __init__(self, endpoint: str, credential):
        self.target = endpoint
        self._client = EventGridPublisherClient(endpoint, credential)

    def send(self, events: list[dict]) -> None:
        """Publish CloudEvents (JSON dicts, ids fixed by their facts) as one batch; all land or none."""
        try:
            # No SDK retries (the outbox retries, durably); short timeouts, so a silent topic cannot hold a round.
            self._client.send(events, retry_total=0, **TIMEOUTS)
        except (ClientAuthenticationError, HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
            raise _classify(e) from None
