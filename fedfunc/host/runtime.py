"""`Host`: the app, the store, the keys, the engine and the web server, started and stopped together."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

from fedfunc.host.app_loader import App, load_app
from fedfunc.host.auth import HostRoutes, master
from fedfunc.host.engine import Engine
from fedfunc.host.http import HttpTriggers
from fedfunc.host.invoke import Invoker
from fedfunc.host.keys import HostKeys
from fedfunc.host.management import Management
from fedfunc.host.store import Store

log = logging.getLogger("fedfunc.host")


def default_state_path(app_dir: Path) -> Path:
    return Path(app_dir) / ".fedfunc" / "host-state.sqlite"


def default_keys_path(state: Path) -> Path:
    return Path(state).with_suffix(".keys.json")


class BindError(RuntimeError):
    """The address or port cannot be bound."""


class Host:
    def __init__(self, app_dir: Path, port: int = 7071, state: Path | None = None, bind: str = "127.0.0.1",
                 max_activities: int = 8, poll_interval: float | None = None, keys: Path | None = None,
                 watch: tuple[Path, ...] = (), storage_logs: tuple[Path, ...] = (), ready_file: Path | None = None):
        """`port` 0 binds a free port (see `origin` once started, or `ready_file`); `watch` lists folders
        whose changes mean storage changed (Azurite's data folder) and `storage_logs` access logs that
        name each blob written (Azurite's log without `--silent`), so the Event Grid watcher looks at
        once instead of waiting for its safety poll."""
        self.app_dir = Path(app_dir).resolve()
        self.port, self.bind = port, bind
        self.state_path = Path(state) if state else default_state_path(self.app_dir)
        self.keys_path = Path(keys) if keys else default_keys_path(self.state_path)
        self.max_activities, self.poll_interval = max_activities, poll_interval
        self.watch, self.storage_logs = tuple(Path(p) for p in watch), tuple(Path(p) for p in storage_logs)
        self.ready_file = ready_file
        self._runner: web.AppRunner | None = None
        self._services: list = []

    async def start(self) -> None:
        try:  # bound now and kept: no gap between choosing a port and using it
            sock = socket.create_server((self.bind, self.port))
        except OSError as exc:
            raise BindError(f"cannot listen on {self.bind}:{self.port}: {exc}") from exc
        self.port = sock.getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        os.environ["FEDFUNC_HOST_URL"] = self.origin  # for app code that calls the host (subscriptions)
        self.store = Store(self.state_path)  # fails clearly on a foreign or corrupt file
        self.app: App = load_app(self.app_dir)
        self.keys = HostKeys.load(self.keys_path)  # after local.settings.json, which may set the master key
        self.management = Management(None, self.origin, self.keys)
        self.invoker = Invoker(str(self.app_dir), self.management.client_binding)
        self.invoker.loop = asyncio.get_running_loop()
        self.engine = Engine(self.app, self.store, self.invoker, max_activities=self.max_activities)
        self.management.engine = self.engine
        web_app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes = HostRoutes(web_app, self.keys)
        self.management.add_routes(self.routes)
        for service in self._make_services():
            service.add_routes(self.routes)
            self._services.append(service)
        self.http = HttpTriggers(self.app, self.invoker, self.keys)
        self.routes.add("GET", "/admin/host/status", self._status, master)
        self.routes.add_app(self.http.handle)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.engine.start()
        self._print_functions()
        for service in self._services:
            await service.start()
        log.info("fedfunc host ready on %s (state %s, keys %s)", self.origin, self.state_path, self.keys_path)
        if self.ready_file:
            tmp = Path(f"{self.ready_file}.tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "port": self.port, "origin": self.origin}))
            tmp.replace(self.ready_file)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"state": "Running", "functions": sorted(self.app.functions)})

    def _make_services(self) -> list:
        from fedfunc.host.eventgrid import EventGrid
        from fedfunc.host.timers import TimerTriggers
        return [TimerTriggers(self.app, self.store, self.invoker),
                EventGrid(self.app, self.store, self.invoker, self.keys, self.origin,
                          poll_interval=self.poll_interval, watch=self.watch, access_logs=self.storage_logs)]

    def _print_functions(self) -> None:
        lines = ["Functions:"]
        prefix = f"/{self.app.route_prefix}" if self.app.route_prefix else ""
        for f in self.app.functions.values():
            off = " (disabled)" if f.disabled else ""
            if f.trigger_type == "httpTrigger":
                methods = ",".join(f.trigger.get("methods") or ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
                lines.append(f"        {f.name}: [{methods}] {self.origin}{prefix}/{f.trigger.get('route') or f.name}{off}")
            else:
                lines.append(f"        {f.name}: {f.trigger_type}{off}")
        print("\n".join(lines), flush=True)

    async def stop(self) -> None:
        if self.ready_file:
            Path(self.ready_file).unlink(missing_ok=True)
        for service in self._services:
            await service.stop()
        self.engine.stop()
        if self._runner:
            await self._runner.cleanup()
        self.store.close()

    async def run_forever(self) -> None:
        """Until Ctrl-C (SIGINT) or a supervisor's SIGTERM, then a graceful stop. SIGTERM counts because
        SIGINT can arrive ignored: a process started in the background by a non-interactive shell inherits
        SIGINT ignored, and would then outwait its supervisor's patience and be killed."""
        await self.start()
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        try:
            await stopping.wait()
        finally:
            await self.stop()
