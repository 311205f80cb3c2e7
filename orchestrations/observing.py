"""How orchestrations tell observers of a milestone (``fedfunc.observe``): one activity, retried like the
others; what it cannot deliver it keeps and retries later itself, so observing never fails a run."""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc import protocol as p
from orchestrations.failures import ACTIVITY_RETRY


def observe(context: df.DurableOrchestrationContext, fact: p.RunFact | p.SiloFact):
    return context.call_activity_with_retry(p.OBSERVE, ACTIVITY_RETRY, fact.wire())
