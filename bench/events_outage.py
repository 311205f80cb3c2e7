"""Domain events delivered vs published over a run with the topic unreachable for a while.

The app publishes to its host's custom topic through a TCP relay this bench switches off when round
``--down-at`` starts and on again when round ``--up-at`` has completed (a real outage: connections refused,
open ones cut). A webhook subscriber de-duplicates by event id. After the run the bench waits until the
app's outbox owes nothing, then prints what the app recorded (published), what the subscriber got (all
deliveries and distinct ids), duplicates, missing, and how late the events held back by the outage came.
Must be: distinct delivered = published, none missing.

    flock /tmp/fedfunc-heavy.lock .venv/bin/python bench/events_outage.py [--rounds 6] [--down-at 1] [--up-at 3]
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from fedfunc.devstack import EVENTS_TOPIC, DevStack
from fedfunc.host.testing import wait_until
from fedfunc.host.topics import topic_endpoint
from fedfunc.observe.outbox import ObservationOutbox
from fedfunc.observe.subscriber import EventSubscriber
from fedfunc.storage import table_service


class Relay:
    """A TCP relay on a fixed port to ``target``'s port; ``down()`` refuses new connections and cuts open ones."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.target: int | None = None
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener:
            listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--silos", type=int, default=3)
    p.add_argument("--down-at", type=int, default=1, help="the topic goes down when this round starts")
    p.add_argument("--up-at", type=int, default=3, help="and comes back when this round has completed")
    args = p.parse_args()
    relay = Relay()
    relay_endpoint = topic_endpoint(f"http://127.0.0.1:{relay.port}", EVENTS_TOPIC)
    with tempfile.TemporaryDirectory() as tmp, \
            DevStack(Path(tmp), extra_settings={"FEDFUNC_EVENTS_ENDPOINT": relay_endpoint}) as stack, \
            EventSubscriber() as sub:
        relay.target = stack.host.port
        relay.up()
        stack.subscribe_events("bench", sub.url)
        silos = [f"site-{i + 1}" for i in range(args.silos)]
        stack.add_silos_with_data(silos)
        hp = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}
        run = stack.start_run({"silos": silos, "rounds": args.rounds, "round_deadline_s": 300,
                               "bundle": stack.bundle("digits", hp), "run_id": "outage"})
        stack.wait_round(run, args.down_at, timeout=600)
        relay.down()
        went_down = time.monotonic()
        stack.wait_round(run, args.up_at + 1, timeout=600)
        relay.up()
        outage_s = time.monotonic() - went_down
        status = stack.wait_run(run, timeout=1800)
        assert status["runtime_status"] == "Completed", status
        outbox = ObservationOutbox.create(table_service(stack.azurite.orchestrator.connection_string))
        run_events = lambda: {k: v for k, v in outbox.states("events").items() if k.startswith(f"run:{run}:")}  # noqa: E731
        ended = time.monotonic()
        wait_until(lambda: set(run_events().values()) == {"done"}, timeout=300, interval=0.5,
                   what="the outbox to owe nothing")
        published = run_events()
        wait_until(lambda: set(sub.facts(f"runs/{run}")) >= set(published), timeout=120, interval=0.2,
                   what="the subscriber to hear every event")
        drained_s = time.monotonic() - ended
    deliveries = sub.delivered(f"runs/{run}")
    counts = Counter(e["id"] for e in deliveries)
    facts = sub.facts(f"runs/{run}")
    late = [(datetime.now(timezone.utc) - datetime.fromisoformat(e["time"])).total_seconds() for e in facts.values()]
    print(f"run {run}: {args.rounds} rounds, {args.silos} silos; topic down for {outage_s:.0f} s "
          f"(from round {args.down_at} starting until round {args.up_at} completed)")
    print(f"published (facts the app recorded): {len(published)}")
    print(f"delivered to the subscriber: {len(deliveries)} deliveries, {len(facts)} distinct ids, "
          f"{sum(c - 1 for c in counts.values())} duplicates, missing {sorted(set(published) - set(facts))}")
    print(f"outbox owed nothing {drained_s:.1f} s after the run completed; oldest event's age at the end: "
          f"{max(late):.0f} s (its time is when it happened, not when it was sent)")
    print("distinct delivered == published:", set(facts) == set(published))


if __name__ == "__main__":
    main()
