"""Calling user functions the way the Python worker does: keyword arguments named after the
bindings, async functions on the host's event loop, one log line per invocation."""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from fedfunc.host.app_loader import Function

log = logging.getLogger("fedfunc.host")


class InvocationContext:
    """The `context` argument user functions may declare (the parts a local host can give)."""

    def __init__(self, function_name: str, directory: str):
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = directory
        self.trace_context = None
        self.retry_context = None


@contextmanager
def logged(kind: str, function: str, instance: str | None = None) -> Iterator[None]:
    """One line per invocation: what ran, for which instance, how long, and how it ended."""
    start = time.perf_counter()
    where = f" instance={instance}" if instance else ""
    try:
        yield
    except Exception as exc:
        ms = (time.perf_counter() - start) * 1000
        log.error("%s %s%s %.1fms Failed: %s\n%s", kind, function, where, ms, exc, traceback.format_exc())
        raise
    ms = (time.perf_counter() - start) * 1000
    log.info("%s %s%s %.1fms Succeeded", kind, function, where, ms)


def background(coro, what: str) -> asyncio.Task:
    """A long-running host task whose crash is logged rather than lost."""
    def report(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception():
            log.error("%s stopped: %r", what, task.exception(), exc_info=task.exception())
    task = asyncio.create_task(coro)
    task.add_done_callback(report)
    return task


class Invoker:
    """Builds arguments for a function and runs it: sync code in a thread, async code on the loop."""

    def __init__(self, directory: str, client_binding: Callable[[], str]):
        self.directory = directory
        self.client_binding = client_binding
        self.loop: asyncio.AbstractEventLoop | None = None

    def arguments(self, f: Function, trigger_value: Any) -> dict:
        kwargs = {f.param: trigger_value}
        params = inspect.signature(f.fn).parameters
        if f.client_param:
            kwargs[f.client_param] = self.client_binding()
        if "context" in params and f.param != "context":
            kwargs["context"] = InvocationContext(f.name, self.directory)
        return kwargs

    async def call_async(self, f: Function, trigger_value: Any) -> Any:
        """From the event loop (HTTP, Event Grid, timer triggers)."""
        kwargs = self.arguments(f, trigger_value)
        if inspect.iscoroutinefunction(f.fn):
            return await f.fn(**kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: f.fn(**kwargs))

    def call_blocking(self, f: Function, trigger_value: Any) -> Any:
        """From a worker thread (activities): async code still runs on the host's loop, where
        the Durable SDK's shared HTTP session lives."""
        kwargs = self.arguments(f, trigger_value)
        if inspect.iscoroutinefunction(f.fn):
            return asyncio.run_coroutine_threadsafe(f.fn(**kwargs), self.loop).result()
        return f.fn(**kwargs)
