"""The per-silo view of a run, one row per silo, shared by the API, ``fedfunc run status``, the run page
and the report: the silo's state in the round in progress (else in its last round), its time in that
round, and its samples, own training loss and test metrics from the last round it reported them in."""
from __future__ import annotations

from datetime import datetime

OWN = ("loss", "num_samples", "epochs")   # the rest of a silo's metrics are its test metrics


def _started(current: dict) -> datetime | None:
    started = current.get("started")
    return datetime.fromisoformat(started) if isinstance(started, str) else started


def silo_rows(history: list[dict], current: dict | None = None, now: datetime | None = None) -> list[dict]:
    """``history``: round results (``RoundResult`` JSON); ``current``: the round in progress's status."""
    rows: dict[str, dict] = {}
    for r in history:
        for silo, o in r["silos"].items():
            row = rows.setdefault(silo, {"silo": silo, "accepted_rounds": 0, "num_samples": None, "loss": None,
                                         "test": {}})
            metrics = o.get("metrics") or {}
            row.update(round=r["round"], state=o["state"], reason=o.get("reason"), seconds=o.get("seconds"))
            if o["state"] == "received":
                row["accepted_rounds"] += 1
            if o.get("num_samples") is not None:
                row["num_samples"] = o["num_samples"]
            if "loss" in metrics:
                row["loss"] = metrics["loss"]
            if any(k not in OWN for k in metrics):
                row["test"] = {k: v for k, v in metrics.items() if k not in OWN}
    if current and current.get("silos"):
        started = _started(current)
        for silo, o in current["silos"].items():
            row = rows.setdefault(silo, {"silo": silo, "accepted_rounds": 0, "num_samples": None, "loss": None,
                                         "test": {}})
            seconds = o.get("seconds")
            if o["state"] == "waiting" and started and now:
                seconds = max(0.0, (now - started).total_seconds())
            row.update(round=current.get("round"), state=o["state"], reason=o.get("reason"), seconds=seconds)
    return [rows[s] for s in sorted(rows)]
