"""Observability: a run's milestones told to MLflow (tracking), to Event Grid subscribers (domain events)
and to people (the run page, the per-silo table).

A milestone is a ``fedfunc.protocol`` fact (``RunFact`` / ``SiloFact``). ``events`` and ``tracking`` turn
a fact into what each sink receives, with ids fixed by the fact, so a replay records nothing new;
``outbox`` keeps what is not yet delivered; ``delivery`` drains it into the sinks (``publisher``,
``mlflow_tracker``), retrying the unreachable and setting aside what a sink refuses; ``silos``,
``chart`` and ``page`` render what a person reads; ``links`` signs the page's expiring links.
Only ``outbox``, ``publisher`` and ``mlflow_tracker`` do I/O; ``fedfunc.coordinator.services`` builds them.
"""
