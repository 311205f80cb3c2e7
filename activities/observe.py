"""The ``observe`` activity: a run's or silo's milestone → the run's round record, then MLflow tracking
and domain events (``fedfunc.observe``). Recorded once per fact; delivery never raises."""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc import protocol as p
from fedfunc.coordinator import rounds
from fedfunc.coordinator.services import services

bp = df.Blueprint()


@bp.function_name(p.OBSERVE)
@bp.activity_trigger(input_name="fact")
def observe(fact: dict) -> None:
    svc = services()
    fact = p.parse_fact(fact)
    if isinstance(fact, p.RunFact) and fact.kind == "RoundCompleted":
        rounds.keep_round_result(svc.store, fact.run_id, fact.result)
    svc.observer.record(fact)
    svc.observer.drain(tracking=isinstance(fact, p.RunFact))
