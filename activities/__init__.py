"""Activities: thin adapters from Durable inputs to ``fedfunc.coordinator`` (idempotent, re-runnable)."""
