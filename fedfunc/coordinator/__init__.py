"""The orchestrator's side of a round, as plain functions the activities call.

Everything here is idempotent: Durable re-runs an activity after a crash (at-least-once), so each
function either writes the same bytes again or finds its earlier result and returns it.
"""
