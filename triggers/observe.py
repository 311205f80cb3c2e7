"""Delivery of what observers are still owed (MLflow work, domain events) when no milestone comes to
carry it: after an outage, or after the run's last milestone. The ``observe`` activity drains too."""
from __future__ import annotations

import asyncio
import logging

import azure.durable_functions as df
import azure.functions as func

from fedfunc.coordinator.services import services
from fedfunc.protocol import RunFact, SiloFact

bp = df.Blueprint()
log = logging.getLogger("fedfunc.observe")
DRAIN_SCHEDULE = "*/30 * * * * *"   # NCRONTAB with seconds: every 30 s


@bp.timer_trigger(arg_name="timer", schedule=DRAIN_SCHEDULE, run_on_startup=False)
def drain_observations(timer: func.TimerRequest) -> None:
    observer = services().observer
    if observer.enabled:
        drained = observer.drain()
        if drained.delivered or drained.retrying or drained.refused:
            log.info("observe: drained %s", drained)


async def tell(fact: RunFact | SiloFact) -> None:
    """From an HTTP route: record ``fact`` (an error fails the request, and its retry records the same
    fact), then deliver it now, off the event loop; what does not go now, the timer delivers."""
    observer = services().observer
    if observer.enabled:
        await asyncio.to_thread(observer.record, fact)
        await asyncio.to_thread(observer.drain, tracking=isinstance(fact, RunFact))
