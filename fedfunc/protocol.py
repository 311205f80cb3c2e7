"""Names the orchestrations and the triggers that talk to them must agree on."""
from __future__ import annotations


def round_instance_id(run: str, round_: int) -> str:
    """Deterministic, so an event for a finished round can never reach the next one."""
    return f"{run}:r{round_}"


def update_event(silo: str) -> str:
    return f"update:{silo}"


def failed_event(silo: str) -> str:
    return f"failed:{silo}"
