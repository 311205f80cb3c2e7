"""A subscriber of fedfunc's domain events as ``docs/events.md`` asks for one: a webhook that takes
CloudEvents (one per request, or a batch), answers Event Grid's CloudEvents validation handshake, and
handles each fact once by de-duplicating on (``source``, ``id``) — deliveries are at least once.

Used by the end-to-end tests and the benches; a real subscriber would keep its seen ids durably.

    with EventSubscriber() as sub:
        stack.subscribe_events("mine", sub.url)
        ...
        sub.facts(subject_prefix="runs/run-1")   # {id: event}, each fact once
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EventSubscriber:
    def __init__(self, host: str = "127.0.0.1"):
        self.deliveries: list[dict] = []     # every event as delivered, repeats included
        self._seen: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()
        sub = self

        class Handler(BaseHTTPRequestHandler):
            def do_OPTIONS(self):   # CloudEvents webhook validation (abuse protection)
                self.send_response(200)
                self.send_header("WebHook-Allowed-Origin", self.headers.get("WebHook-Request-Origin", "*"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                sub._take(body if isinstance(body, list) else [body])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/events"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _take(self, events: list[dict]) -> None:
        with self._lock:
            for event in events:
                self.deliveries.append(event)
                self._seen.setdefault((event.get("source"), event.get("id")), event)

    def facts(self, subject_prefix: str = "") -> dict[str, dict]:
        """Each fact once, by event id (the first delivery of it)."""
        with self._lock:
            return {i: e for (_, i), e in self._seen.items() if (e.get("subject") or "").startswith(subject_prefix)}

    def delivered(self, subject_prefix: str = "") -> list[dict]:
        with self._lock:
            return [e for e in self.deliveries if (e.get("subject") or "").startswith(subject_prefix)]

    def start(self) -> "EventSubscriber":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "EventSubscriber":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
