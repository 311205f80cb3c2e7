"""``fedfunc run start|status|list|cancel|open``: drive runs on a running host over its HTTP API.

Text from the API (run errors, silo names, failure reasons silos wrote) is printed literally: as rich
``Text`` (never read as markup) on one line with control characters escaped (``fedfunc.cli.one_line``).
"""
from __future__ import annotations

import time
import webbrowser
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fedfunc.api_client import API_KEY, HOST, call
from fedfunc.cli import one_line, safe
from fedfunc.cli_args import json_object, key_values

run_app = typer.Typer(no_args_is_help=True, help="Start and watch federated runs on a running Function App.")
console = Console()
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
STATE_STYLE = {"received": "green", "failed": "red", "rejected": "red", "waiting": "yellow"}


def _text(value: object, style: str = "") -> Text:
    return Text("" if value is None else one_line(value), style=style)


def strategy_options(pairs: list[str] | None) -> dict:
    return key_values(pairs or [], "--strategy-option", "eta=0.01")


STRATEGY = typer.Option(None, "--strategy", help="server strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, "
                                                 "fedprox, trimmed_mean, median, krum (default: the spec's, else fedavg)")
STRATEGY_OPTION = typer.Option(None, "--strategy-option", help="KEY=VALUE, repeatable (e.g. eta=0.01)")


@run_app.command("start")
def start(spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="the run spec (JSON)"),
          strategy: Optional[str] = STRATEGY, strategy_option: Optional[list[str]] = STRATEGY_OPTION,
          host: str = HOST, api_key: str = API_KEY) -> None:
    """Start a run from SPEC.json; its "bundle" is the hash `fedfunc bundle upload` printed. ``--strategy`` and
    ``--strategy-option`` set the server side only: what runs in the silos (FedProx's μ, clipping) is in
    the signed bundle, and the run cannot change it."""
    body = json_object(spec, "SPEC", "a run spec")
    if strategy or strategy_option:
        current = body.get("strategy") or "fedavg"
        current = {"name": current} if isinstance(current, str) else dict(current)
        if strategy and strategy.lower() != str(current.get("name", "")).lower():
            current = {"name": strategy, "wrappers": current.get("wrappers", [])}
        current["options"] = {**current.get("options", {}), **strategy_options(strategy_option)}
        body["strategy"] = current
    started = call("POST", host, api_key, "runs", body)
    run = safe(started["run"])
    console.print(f"started run [bold]{run}[/]; watch it with: fedfunc run status {run} --watch")


def _num(value, fmt: str = "{:.4f}") -> str:
    if value is None:
        return ""
    return fmt.format(value) if isinstance(value, (int, float)) else one_line(value)


def _outcome(name: str, o: dict) -> str:
    """``site-1:received``, with the weight it was given when a sample cap lowered it."""
    capped = o.get("capped")
    return f"{name}:{o.get('state')}" + (f" (weighted {o.get('num_samples')} of {capped.get('reported')})"
                                         if capped else "")


def _failures(s: dict) -> list[Text]:
    """Every failed or rejected silo of the run's rounds and of the round in progress, with its whole reason
    (the silos table shows only each silo's latest, in a column)."""
    c = s.get("current_round")
    current = [{"round": c.get("round"), "silos": {
        **{n: {"state": "failed", "reason": why} for n, why in (c.get("failed") or {}).items()},
        **{n: {"state": "rejected", "reason": why} for n, why in (c.get("rejected") or {}).items()}}}] if c else []
    return [Text("  ") + _text(f"round {r.get('round')} {n} {o['state']}: {o.get('reason')}")
            for r in [*(s.get("history") or []), *current]
            for n, o in sorted((r.get("silos") or {}).items()) if o.get("state") in ("failed", "rejected")]


def status_view(s: dict) -> Group:
    """A run's state, its rounds, one row per silo (state, samples, own training loss, time) and the
    reasons of its silos' failures and rejections."""
    head = Text.assemble("run ", _text(s.get("run"), "bold"),
                         _text(f": {s.get('runtime_status')} ({s.get('phase')}), "
                               f"round {s.get('round')} of {s.get('rounds')}"))
    parts: list = [head]
    if s.get("error"):
        parts.append(_text(s["error"], "red"))
    history = s.get("history") or []
    heldout = any("heldout_accuracy" in (r.get("metrics") or {}) for r in history)
    rounds = Table("round", "test acc.", "loss", *(["held-out acc."] if heldout else []), "samples", "silos",
                   title="rounds (accuracy pooled over the silos' test parts, of each round's model)",
                   title_justify="left")
    for r in history:
        metrics = r.get("metrics") or {}
        silos = ", ".join(_outcome(n, o) for n, o in sorted((r.get("silos") or {}).items()))
        rounds.add_row(_text(r.get("round")), _num(metrics.get("accuracy")), _num(metrics.get("loss")),
                       *([_num(metrics.get("heldout_accuracy"))] if heldout else []),
                       _text(r.get("num_samples")), _text(silos))
    parts.append(rounds)
    c = s.get("current_round")
    if c:
        parts.append(_text(f"round {c.get('round')} {c.get('phase')}: received {c.get('received')}, "
                           f"missing {c.get('missing')}"))
    silos = Table("silo", "state", "round", "samples", "loss", "time (s)", "reason", title="silos",
                  title_justify="left")
    for row in s.get("silos") or []:
        silos.add_row(_text(row.get("silo")), _text(row.get("state"), STATE_STYLE.get(row.get("state"), "")),
                      _text(row.get("round")), _num(row.get("num_samples"), "{}"),
                      _num(row.get("loss")), _num(row.get("seconds"), "{:.1f}"), _text(row.get("reason")))
    parts.append(silos)
    parts.extend(_failures(s))
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
        while s.get("runtime_status") not in TERMINAL:
            time.sleep(interval)
            s = call("GET", host, api_key, f"runs/{run_id}")
            live.update(status_view(s))


@run_app.command("list")
def list_runs(host: str = HOST, api_key: str = API_KEY) -> None:
    table = Table("run", "status", "phase", "round", "pooled test accuracy")
    for r in call("GET", host, api_key, "runs")["runs"]:
        acc = (r.get("metrics") or {}).get("accuracy")
        table.add_row(*(safe(v) for v in (r.get("run"), r.get("runtime_status") or "", r.get("phase") or "",
                                          r.get("round"), _num(acc))))
    console.print(table)


@run_app.command("cancel")
def cancel(run_id: str, host: str = HOST, api_key: str = API_KEY) -> None:
    result = call("POST", host, api_key, f"runs/{run_id}/cancel")
    console.print(f"cancelled run {safe(run_id)}; jobs cancelled: {safe(result.get('cancelled_jobs'))}")


@run_app.command("open")
def open_page(run_id: str, host: str = HOST, api_key: str = API_KEY,
              ttl: int = typer.Option(3600, "--ttl", min=60, help="seconds the link stays valid"),
              browser: bool = typer.Option(False, "--browser", help="also open it in the default browser")) -> None:
    """Print a link to the run's page: signed and expiring (locally), or Entra ID sign-in (Azure)."""
    link = call("POST", host, api_key, f"runs/{run_id}/link", {"ttl_s": ttl})
    until = f" (valid until {link['expires']})" if link.get("expires") else " (sign in with Entra ID)"
    console.print(_text(link["url"]), soft_wrap=True)
    console.print(_text(f"run page of {run_id}{until}"), style="dim")
    if browser:
        webbrowser.open(str(link["url"]))


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
