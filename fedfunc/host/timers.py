"""Timer triggers: six-field NCRONTAB (seconds first), `run_on_startup`, and `past_due` for an
occurrence missed while the host was down (the next due time is kept in the store)."""
from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta

from azure.functions.timer import TimerRequest
from croniter import croniter

from fedfunc.host import events as ev
from fedfunc.host.app_loader import App, AppLoadError, Function, resolve_settings
from fedfunc.host.invoke import Invoker, background, logged
from fedfunc.host.store import Store

log = logging.getLogger("fedfunc.host")
LATE = timedelta(seconds=1)


class Schedule:
    """NCRONTAB `sec min hour day month dow`, or a TimeSpan `hh:mm:ss` interval."""

    def __init__(self, expression: str, where: str):
        self.expression = expression
        if re.fullmatch(r"\d{1,2}:\d{2}:\d{2}", expression):
            h, m, s = map(int, expression.split(":"))
            self.interval = timedelta(hours=h, minutes=m, seconds=s)
            if not self.interval:
                raise AppLoadError(f"{where}: schedule {expression!r} is a zero interval")
            return
        self.interval = None
        if len(expression.split()) != 6 or not croniter.is_valid(expression, second_at_beginning=True):
            raise AppLoadError(f"{where}: schedule {expression!r} is not a six-field NCRONTAB expression "
                               "'{second} {minute} {hour} {day} {month} {day-of-week}'")

    def next_after(self, moment: datetime) -> datetime:
        if self.interval:
            return moment + self.interval
        return croniter(self.expression, moment, second_at_beginning=True).get_next(datetime)


class TimerTriggers:
    def __init__(self, app: App, store: Store, invoker: Invoker):
        self.store, self.invoker = store, invoker
        self.functions = [f for f in app.of_type("timerTrigger") if not f.disabled]
        self.schedules = {f.name: Schedule(resolve_settings(f.trigger["schedule"], f"timer trigger '{f.name}'"),
                                           f"timer trigger '{f.name}'") for f in self.functions}
        self._tasks: list[asyncio.Task] = []

    def add_routes(self, web_app) -> None:
        """Timer triggers have no routes."""

    async def start(self) -> None:
        for f in self.functions:
            self._tasks.append(background(self._run(f), f"timer trigger '{f.name}'"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _save(self, name: str, due: datetime) -> None:
        with self.store.tx() as db:
            db.execute("INSERT OR REPLACE INTO schedules VALUES (?, ?)", (name, due.timestamp()))

    async def _run(self, f: Function) -> None:
        schedule = self.schedules[f.name]
        now = ev.utcnow()
        row = self.store.one("SELECT next_due FROM schedules WHERE function=?", (f.name,))
        missed = row is not None and row["next_due"] < now.timestamp() - LATE.total_seconds()
        if f.trigger.get("runOnStartup") or missed:
            await self._fire(f, schedule, past_due=missed, last=now)
        due = schedule.next_after(ev.utcnow())
        while True:
            self._save(f.name, due)
            await asyncio.sleep(max(0.0, (due - ev.utcnow()).total_seconds()))
            late = ev.utcnow() - due > LATE
            await self._fire(f, schedule, past_due=late, last=due)
            due = schedule.next_after(max(due, ev.utcnow()))

    async def _fire(self, f: Function, schedule: Schedule, past_due: bool, last: datetime) -> None:
        status = {"Last": ev.iso(last), "Next": ev.iso(schedule.next_after(last)), "LastUpdated": ev.iso(ev.utcnow())}
        request = TimerRequest(past_due=past_due, schedule_status=status,
                                    schedule={"AdjustForDST": False})
        try:
            with logged("timer", f.name):
                await self.invoker.call_async(f, request)
        except Exception:
            pass  # logged with its traceback; the schedule goes on, as on Azure
