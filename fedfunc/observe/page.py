"""The run page: one server-rendered HTML page per run (curves as inline SVG, the per-silo table, rounds,
the timeline and privacy figures where the run has them), refreshing itself while the run goes on.

Every value is escaped by Jinja2's autoescape, so text written by silos (failure reasons) shows as text;
only the SVG matplotlib drew is placed as markup. The page needs no script (``CSP`` allows none).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fedfunc.observe.chart import inline_svg
from fedfunc.observe.silos import silo_rows

REFRESH_S = 5
LIVE = ("Running", "Pending")
PRIVACY_KEYS = ("epsilon", "delta", "noise_multiplier", "clip_norm")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _num(value, fmt: str = "%.4f") -> str:
    return "" if value is None else fmt % value


def _round_rows(history: list[dict]) -> list[dict]:
    rows = []
    for r in history:
        states = [o["state"] for o in r["silos"].values()]
        started, ended = _time(r.get("started")), _time(r.get("ended"))
        rows.append({"round": r["round"], "accuracy": _num(r["metrics"].get("accuracy")),
                     "loss": _num(r["metrics"].get("loss")), "num_samples": r["num_samples"],
                     "received": states.count("received"), "failed": states.count("failed"),
                     "rejected": states.count("rejected"),
                     "duration": _num((ended - started).total_seconds(), "%.1f") if started and ended else ""})
    return rows


def _timeline(history: list[dict]) -> dict | None:
    """Each round as a bar on the run's time axis, each silo's arrival as a tick in it."""
    timed = [(r, _time(r.get("started")), _time(r.get("ended"))) for r in history]
    timed = [t for t in timed if t[1] and t[2]]
    if not timed:
        return None
    start, end = min(t[1] for t in timed), max(t[2] for t in timed)
    span = max((end - start).total_seconds(), 1e-9)

    def pct(at: datetime) -> str:
        return f"{100 * (at - start).total_seconds() / span:.2f}"

    rows = []
    for r, started, ended in timed:
        arrived = {s: o["seconds"] for s, o in r["silos"].items() if o.get("seconds") is not None}
        ticks = [{"silo": s, "seconds": f"{sec:.1f}",
                  "left": f"{100 * ((started - start).total_seconds() + sec) / span:.2f}"}
                 for s, sec in sorted(arrived.items())]
        slowest = max(arrived, key=arrived.get) if arrived else None
        rows.append({"round": r["round"], "left": pct(started), "ticks": ticks,
                     "width": f"{100 * (ended - started).total_seconds() / span:.2f}",
                     "slowest": f"{slowest} ({arrived[slowest]:.1f} s)" if slowest else ""})
    return {"start": start.strftime("%H:%M:%S"), "end": end.strftime("%H:%M:%S"), "span": f"{span:.1f}", "rows": rows}


def _privacy(history: list[dict]) -> dict | None:
    keys = [k for k in PRIVACY_KEYS if any(k in r["metrics"] for r in history)]
    if not keys:
        return None
    return {"names": keys, "rows": [{"round": r["round"], **{k: _num(r["metrics"].get(k), "%.4g") for k in keys}}
                                   for r in history]}


def render_page(view: dict, *, now: datetime | None = None, baseline: float | None = None) -> str:
    """HTML for a run ``view`` (``GET /api/runs/{id}``'s JSON: ``run``, ``runtime_status``, ``phase``,
    ``rounds``, ``history``, ``current_round``, ``error``, …)."""
    now = now or datetime.now(timezone.utc)
    history = view.get("history") or []
    live = view.get("runtime_status") in LIVE
    silos = view.get("silos") or silo_rows(history, view.get("current_round"), now)
    rounds = view.get("rounds")
    shown = len(history) + (1 if live else 0)
    return _env.get_template("run.html").render(
        run=view["run"], runtime_status=view.get("runtime_status"), phase=view.get("phase"),
        rounds=rounds, shown_round=min(shown, rounds) if rounds else shown, history=history,
        updated=str(view.get("updated") or ""), refresh_s=REFRESH_S if live else None,
        error=view.get("error"), stop_reason=(view.get("output") or {}).get("stop_reason") or view.get("stop_reason"),
        chart=inline_svg(history, title=f"run {view['run']}", baseline=baseline) if history else None,
        silos=silos, test_keys=sorted({k for s in silos for k in s["test"]}), rounds_rows=_round_rows(history),
        timeline=_timeline(history), privacy=_privacy(history), report=view.get("report"))


def render_message(title: str, message: str) -> str:
    """A plain page for refusals and misses (the message escaped like everything else)."""
    return _env.from_string(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{{ title }}</title></head>"
        "<body><h1>{{ title }}</h1><p id=\"message\">{{ message }}</p></body></html>").render(title=title, message=message)
