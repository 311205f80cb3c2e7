"""Dispatch overhead of `fedfunc host` (not a test): no-op activities, so every millisecond
measured is the host's (SQLite writes, thread hand-offs, SDK replay).

Prints, for a chain of sequential activities and for fan-outs of 10 and 100 parallel
activities: wall time per orchestration, per activity, and per orchestrator episode
(one episode = one replay of the history through the SDK plus the store transaction).

    .venv/bin/python bench/host_dispatch.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedfunc.host.engine import Engine  # noqa: E402
from fedfunc.host.runtime import Host  # noqa: E402

APP = textwrap.dedent('''
    import azure.durable_functions as df
    import azure.functions as func
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.orchestration_trigger(context_name="context")
    def fan(context):
        results = yield context.task_all([context.call_activity("noop", i) for i in range(context.get_input())])
        return len(results)

    @app.orchestration_trigger(context_name="context")
    def chain(context):
        for i in range(context.get_input()):
            yield context.call_activity("noop", i)
        return context.get_input()

    @app.activity_trigger(input_name="x")
    def noop(x):
        return x
''')


class EpisodeClock:
    """Times Engine._run_batch (one episode, store writes included)."""

    def __init__(self):
        self.durations: list[float] = []
        self._original = Engine._run_batch
        clock = self

        def timed(engine, *args, **kwargs):
            start = time.perf_counter()
            try:
                return clock._original(engine, *args, **kwargs)
            finally:
                clock.durations.append(time.perf_counter() - start)
        Engine._run_batch = timed


def run(engine: Engine, clock: EpisodeClock, name: str, n: int) -> tuple[float, int, float]:
    clock.durations.clear()
    start = time.perf_counter()
    instance = engine.start_new(name, None, str(n))
    while engine.status(instance)["runtimeStatus"] not in ("Completed", "Failed"):
        time.sleep(0.0005)
    wall = time.perf_counter() - start
    status = engine.status(instance)
    assert status["runtimeStatus"] == "Completed" and status["output"] == n, status
    return wall, len(clock.durations), statistics.mean(clock.durations)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("fedfunc.host").setLevel(logging.WARNING)  # no per-invocation lines
    clock = EpisodeClock()
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp)
        (app_dir / "function_app.py").write_text(APP)
        loop = asyncio.new_event_loop()
        host = Host(app_dir, port=0, state=app_dir / "state.sqlite")
        threading.Thread(target=loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(host.start(), loop).result()
        run(host.engine, clock, "fan", 10)  # warm-up
        print(f"{'workload':<22}{'wall/orch ms':>14}{'per activity ms':>17}{'episodes':>10}{'ms/episode':>12}")
        for name, n in (("chain", 10), ("fan", 10), ("fan", 100)):
            results = [run(host.engine, clock, name, n) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in results)
            episodes = statistics.median(r[1] for r in results)
            per_episode = statistics.median(r[2] for r in results)
            label = f"{name} x{n}" + (" (sequential)" if name == "chain" else " (parallel)")
            print(f"{label:<22}{wall * 1000:>14.1f}{wall * 1000 / n:>17.2f}{episodes:>10.0f}{per_episode * 1000:>12.2f}")
        print(f"(median of {args.repeats} runs; {host.max_activities} activity threads; Python {sys.version.split()[0]})")
        asyncio.run_coroutine_threadsafe(host.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
