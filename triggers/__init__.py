"""Triggers: thin adapters from HTTP, Event Grid and timers to the Durable client."""
