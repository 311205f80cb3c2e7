"""``fedfunc run start|status|list|cancel|open``: drive runs on a running host over its HTTP API.

Text that silos wrote (failure reasons) and run errors are printed as text, never read as rich markup.
"""
from __future__ import annotations

import json
import time
import webbrowser
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fedfunc.api_client import API_KEY, HOST, call

run_app = typer.Typer(no_args_is_help=True, help="Start and watch federated runs on a running Function App.")
console = Console()
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
STATE_STYLE = {"received": "green", "failed": "red", "rejected": "red", "waiting": "yellow"}


@run_app.command("start")
def start(spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="the run spec (JSON)"),
          host: str = HOST, api_key: str = API_KEY) -> None:
    """Start a run from SPEC.json (it must carry a bundle signed with `fedfunc sign`)."""
    try:
        body = json.loads(spec.read_text())
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"{spec} is not valid JSON: {e}") from None
    started = call("POST", host, api_key, "runs", body)
    run = escape(started["run"])
    console.print(f"started run [bold]{run}[/]; watch it with: fedfunc run status {run} --watch")


def _num(value, fmt: str = "{:.4f}") -> str:
    return "" if value is None else fmt.format(value)


def status_view(s: dict) -> Group:
    """A run's state, its rounds, and one row per silo (state, samples, own training loss, time)."""
    head = Text.assemble(("run ", ""), (s["run"], "bold"), f": {s['runtime_status']} ({s.get('phase')}), "
                         f"round {s.get('round')} of {s.get('rounds')}")
    parts = [head]
    if s.get("error"):
        parts.append(Text(str(s["error"]), style="red"))
    rounds = Table("round", "accuracy", "loss", "samples", "silos", title="rounds", title_justify="left")
    for r in s.get("history", []):
        silos = ", ".join(f"{n}:{o['state']}" for n, o in sorted(r["silos"].items()))
        rounds.add_row(str(r["round"]), _num(r["metrics"].get("accuracy")), _num(r["metrics"].get("loss")),
                       str(r["num_samples"]), Text(silos))
    parts.append(rounds)
    silos = Table("silo", "state", "round", "samples", "loss", "time (s)", "reason", title="silos",
                  title_justify="left")
    for row in s.get("silos", []):
        silos.add_row(Text(row["silo"]), Text(row["state"], style=STATE_STYLE.get(row["state"], "")),
                      "" if row.get("round") is None else str(row["round"]), _num(row.get("num_samples"), "{}"),
                      _num(row.get("loss")), _num(row.get("seconds"), "{:.1f}"), Text(row.get("reason") or ""))
    parts.append(silos)
    return Group(*parts)


@run_app.command("status")
def status(run_id: str, host: str = HOST, api_key: str = API_KEY,
           watch: bool = typer.Option(False, "--watch", "-w", help="keep the table live until the run ends"),
           interval: float = typer.Option(2.0, "--interval", min=0.2, help="seconds between refreshes with --watch")
           ) -> None:
    """A run's state, per-round metrics and a table per silo: state, samples, training loss, time."""
    s = call("GET", host, api_key, f"runs/{run_id}")
    if not watch:
        console.print(status_view(s))
        return
    with Live(status_view(s), console=console, refresh_per_second=4) as live:
        while s["runtime_status"] not in TERMINAL:
            time.sleep(interval)
            s = call("GET", host, api_key, f"runs/{run_id}")
            live.update(status_view(s))


@run_app.command("list")
def list_runs(host: str = HOST, api_key: str = API_KEY) -> None:
    table = Table("run", "status", "phase", "round", "accuracy")
    for r in call("GET", host, api_key, "runs")["runs"]:
        acc = (r.get("metrics") or {}).get("accuracy")
        table.add_row(Text(r["run"]), r["runtime_status"] or "", r.get("phase") or "", str(r.get("round")),
                      "" if acc is None else f"{acc:.4f}")
    console.print(table)


@run_app.command("cancel")
def cancel(run_id: str, host: str = HOST, api_key: str = API_KEY) -> None:
    result = call("POST", host, api_key, f"runs/{run_id}/cancel")
    console.print(Text(f"cancelled run {run_id}; jobs cancelled: {result['cancelled_jobs']}"))


@run_app.command("open")
def open_page(run_id: str, host: str = HOST, api_key: str = API_KEY,
              ttl: int = typer.Option(3600, "--ttl", min=60, help="seconds the link stays valid"),
              browser: bool = typer.Option(False, "--browser", help="also open it in the default browser")) -> None:
    """Print a link to the run's page: signed and expiring (locally), or Entra ID sign-in (Azure)."""
    link = call("POST", host, api_key, f"runs/{run_id}/link", {"ttl_s": ttl})
    until = f" (valid until {link['expires']})" if link.get("expires") else " (sign in with Entra ID)"
    console.print(Text(link["url"]), soft_wrap=True)
    console.print(Text(f"run page of {run_id}{until}"), style="dim")
    if browser:
        webbrowser.open(link["url"])


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
