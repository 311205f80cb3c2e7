"""Security: keys, job tickets, signed code bundles, silo policy, egress checks, audit trail, API roles.

Every refusal raises ``Refused`` naming the rule that refused and the object it refused, so a
failed job, an HTTP error and an audit entry all say the same thing.
"""
from __future__ import annotations


class Refused(Exception):
    """A security rule refused something. ``rule`` is a dotted id (e.g. ``ticket.expired``)."""

    def __init__(self, rule: str, object: str, message: str):
        super().__init__(f"refused by rule {rule} on {object}: {message}")
        self.rule, self.object, self.message = rule, object, message
