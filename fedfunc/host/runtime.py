"""`Host`: the app, the store, the engine and the web server, started and stopped together."""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from fedfunc.host.app_loader import App, load_app
from fedfunc.host.engine import Engine
from fedfunc.host.http import HttpTriggers
from fedfunc.host.invoke import Invoker
from fedfunc.host.management import Management
from fedfunc.host.store import Store

log = logging.getLogger("fedfunc.host")


def default_state_path(app_dir: Path) -> Path:
    return Path(app_dir) / ".fedfunc" / "host-state.sqlite"


class Host:
    def __init__(self, app_dir: Path, port: int = 7071, state: Path | None = None, bind: str = "127.0.0.1",
                 max_activities: int = 8, poll_interval: float = 0.5):
        self.app_dir = Path(app_dir).resolve()
        self.port, self.bind = port, bind
        self.state_path = Path(state) if state else default_state_path(self.app_dir)
        self.max_activities, self.poll_interval = max_activities, poll_interval
        self.origin = f"http://127.0.0.1:{port}"
        self._runner: web.AppRunner | None = None
        self._services: list = []

    async def start(self) -> None:
        os.environ["FEDFUNC_HOST_URL"] = self.origin  # for app code that calls the host (subscriptions)
        self.store = Store(self.state_path)  # fails clearly on a foreign or corrupt file
        self.app: App = load_app(self.app_dir)
        self.management = Management(None, self.origin)
        self.invoker = Invoker(str(self.app_dir), self.management.client_binding)
        self.invoker.loop = asyncio.get_running_loop()
        self.engine = Engine(self.app, self.store, self.invoker, max_activities=self.max_activities)
        self.management.engine = self.engine
        web_app = web.Application(client_max_size=64 * 1024 * 1024)
        self.management.add_routes(web_app)
        for service in self._make_services():
            service.add_routes(web_app)
            self._services.append(service)
        self.http = HttpTriggers(self.app, self.invoker)
        web_app.router.add_get("/admin/host/status", self._status)
        web_app.router.add_route("*", "/{tail:.*}", self.http.handle)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.bind, self.port).start()
        self.engine.start()
        self._print_functions()
        for service in self._services:
            await service.start()
        log.info("fedfunc host ready on %s (state %s)", self.origin, self.state_path)

    async def _status(self, request: web.Request) -> web.Response:
        """Readiness probe (anonymous on this dev host)."""
        return web.json_response({"state": "Running", "functions": sorted(self.app.functions)})

    def _make_services(self) -> list:
        from fedfunc.host.eventgrid import EventGrid
        from fedfunc.host.timers import TimerTriggers
        return [TimerTriggers(self.app, self.store, self.invoker),
                EventGrid(self.app, self.store, self.invoker, self.poll_interval)]

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
        for service in self._services:
            await service.stop()
        self.engine.stop()
        if self._runner:
            await self._runner.cleanup()
        self.store.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
