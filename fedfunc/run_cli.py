"""``fedfunc run start|status|list|cancel``: drive runs on a running host over its HTTP API."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fedfunc.api_client import API_KEY, HOST, call
from fedfunc.cli import safe
from fedfunc.cli_args import json_object, key_values

run_app = typer.Typer(no_args_is_help=True, help="Start and watch federated runs on a running Function App.")
console = Console()


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
    console.print(f"started run [bold]{run}[/]; watch it with: fedfunc run status {run}")


@run_app.command("status")
def status(run_id: str, host: str = HOST, api_key: str = API_KEY) -> None:
    """A run's state, per-round metrics and per-silo outcomes."""
    s = call("GET", host, api_key, f"runs/{run_id}")
    console.print(f"run [bold]{safe(s.get('run'))}[/]: {safe(s.get('runtime_status'))} ({safe(s.get('phase'))}), "
                  f"round {safe(s.get('round'))} of {safe(s.get('rounds'))}"
                  + (f"\n[red]{safe(s['error'])}[/]" if s.get("error") else ""))
    history = s.get("history") or []
    heldout = any("heldout_accuracy" in (r.get("metrics") or {}) for r in history)
    table = Table("round", "test acc.", "loss", *(["held-out acc."] if heldout else []), "samples",
                  title="accuracy pooled over the silos' test parts, per round's model")
    table.add_column("silos", overflow="fold")

    def fmt(m: dict | None, key: str) -> str:
        return "pending" if m is None else ("" if key not in m else _num(m[key]))

    for r in history:
        silos = ", ".join(f"{n}:{o.get('state')}" + (f" (weighted {o['num_samples']} of {o['capped']['reported']})"
                                                     if o.get("capped") else "")
                          for n, o in sorted((r.get("silos") or {}).items()))
        m = r.get("metrics")
        table.add_row(*(safe(v) for v in (r.get("round"), fmt(m, "accuracy"), fmt(m, "loss"),
                                          *([fmt(m, "heldout_accuracy")] if heldout else []),
                                          r.get("num_samples"), silos)))
    console.print(table)
    c = s.get("current_round")
    if c:
        console.print(f"round {safe(c.get('round'))} {safe(c.get('phase'))}: received {safe(c.get('received'))}, "
                      f"missing {safe(c.get('missing'))}")
    for r in [*(s.get("history") or []), *([{"round": c.get("round"), "silos": {
            **{n: {"state": "failed", "reason": why} for n, why in (c.get("failed") or {}).items()},
            **{n: {"state": "rejected", "reason": why} for n, why in (c.get("rejected") or {}).items()}}}] if c else [])]:
        for n, o in sorted((r.get("silos") or {}).items()):
            if o.get("state") in ("failed", "rejected"):
                console.print(f"  round {safe(r.get('round'))} {safe(n)} {safe(o['state'])}: {safe(o.get('reason'))}")


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


@run_app.command("list")
def list_runs(host: str = HOST, api_key: str = API_KEY) -> None:
    table = Table("run", "status", "phase", "round", "pooled test accuracy")
    for r in call("GET", host, api_key, "runs")["runs"]:
        acc = (r.get("metrics") or {}).get("accuracy")
        table.add_row(*(safe(v) for v in (r.get("run"), r.get("runtime_status") or "", r.get("phase") or "",
                                          r.get("round"), "" if acc is None else _num(acc))))
    console.print(table)


@run_app.command("cancel")
def cancel(run_id: str, host: str = HOST, api_key: str = API_KEY) -> None:
    result = call("POST", host, api_key, f"runs/{run_id}/cancel")
    console.print(f"cancelled run {safe(run_id)}; jobs cancelled: {safe(result.get('cancelled_jobs'))}")


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
