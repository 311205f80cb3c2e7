"""An HTTP/1.1 proxy in front of Azurite that injects the transient faults a cloud storage service has.

Per request, with probability ``rate`` (and at most ``budget`` faults in all), one of:
- ``busy``: 503 ServerBusy, without forwarding the request;
- ``timeout``: 500 OperationTimedOut (storage's own server-side timeout), without forwarding;
- ``drop_before``: the connection is closed before the request reaches storage;
- ``drop_after``: the request is applied by storage, but the connection is closed before the answer
  reaches the client — the client retries an operation that already happened;
- ``slow``: the answer is held back ``slow_s`` seconds.
When storage itself is down (Azurite killed), connections are closed as they come. ``hold(prefix)``
swallows requests whose request line starts with ``prefix`` — never forwarded, the connection kept open
until the client goes — so a test can stop a client at a known request (e.g. kill a silo's worker while its
update upload is held, instead of racing the worker to it).

Runs its own event loop in a thread; ``counts`` says what it injected.
"""
from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable

FAULTS = ("busy", "timeout", "drop_before", "drop_after", "slow")
_CANNED = {
    "busy": (503, "Server Busy", "ServerBusy", "The server is currently unable to receive requests."),
    "timeout": (500, "Operation could not be completed within the specified time.", "OperationTimedOut",
                "Operation could not be completed within the specified time."),
}


async def _read_body(reader: asyncio.StreamReader, head: bytes, no_body: bool = False) -> bytes:
    """The message body after ``head``: Content-Length bytes, or chunks up to the last one."""
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    if no_body:
        return b""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            body += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return body
    return await reader.readexactly(int(headers.get(b"content-length", b"0")))


class FaultProxy:
    def __init__(self, upstream_port: Callable[[], int], *, rate: float, budget: int, seed: int = 0, slow_s: float = 1.0,
                 faults: tuple[str, ...] = FAULTS):
        self.upstream_port, self.rate, self.budget, self.slow_s, self.faults = upstream_port, rate, budget, slow_s, faults
        self.random = random.Random(seed)
        self.counts: Counter = Counter()
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._holds: dict[bytes, threading.Event] = {}

    def hold(self, request_line_prefix: bytes) -> threading.Event:
        """Hold every request whose request line starts with the prefix; the event is set once one arrived."""
        return self._holds.setdefault(request_line_prefix, threading.Event())

    @property
    def injected(self) -> int:
        return sum(self.counts[f] for f in FAULTS)

    def _decide(self) -> str | None:
        self.counts["requests"] += 1
        if self.injected >= self.budget or self.random.random() >= self.rate:
            return None
        fault = self.random.choice(self.faults)
        self.counts[fault] += 1
        return fault

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream = None
        try:
            while True:
                try:
                    head = await client_r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                body = await _read_body(client_r, head)
                held = next((e for prefix, e in self._holds.items() if head.startswith(prefix)), None)
                if held is not None:
                    self.counts["held"] += 1
                    held.set()
                    await client_r.read()  # until the client closes (or dies): the request never reaches storage
                    return
                fault = self._decide()
                if fault == "drop_before":
                    return
                if fault in _CANNED:
                    status, reason, code, message = _CANNED[fault]
                    xml = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                           f"<Message>{message}</Message></Error>").encode()
                    client_w.write(f"HTTP/1.1 {status} {reason}\r\nx-ms-error-code: {code}\r\n"
                                   f"Content-Type: application/xml\r\nContent-Length: {len(xml)}\r\n"
                                   f"Connection: close\r\n\r\n".encode() + xml)
                    await client_w.drain()
                    return
                for attempt in (1, 2):  # a kept-alive upstream connection storage closed: open a new one, once
                    if upstream is None:
                        try:
                            upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port())
                        except OSError:
                            self.counts["storage_down"] += 1
                            return
                    up_r, up_w = upstream
                    try:
                        up_w.write(head + body)
                        await up_w.drain()
                        answer = await up_r.readuntil(b"\r\n\r\n")
                        break
                    except (asyncio.IncompleteReadError, ConnectionError) as e:
                        up_w.close()
                        upstream = None
                        if attempt == 2 or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                            raise
                status = int(answer.split(b" ", 2)[1])
                no_body = head.startswith(b"HEAD ") or status in (204, 304) or 100 <= status < 200
                answer += await _read_body(up_r, answer, no_body)
                if fault == "drop_after":
                    return
                if fault == "slow":
                    await asyncio.sleep(self.slow_s)
                client_w.write(answer)
                await client_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            self.counts["upstream_lost"] += 1
        finally:
            for writer in (client_w, upstream[1] if upstream else None):
                if writer is not None:
                    writer.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 24)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await server.serve_forever()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except asyncio.CancelledError:  # stop()
            pass

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(self._loop)])
