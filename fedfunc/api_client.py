"""The CLI's one way to call the Function App's HTTP API: host and API key from options or the environment.
What the API says is printed as text (it may quote silo-written reasons), never read as rich markup."""
from __future__ import annotations

import requests
import typer
from rich.console import Console
from rich.markup import escape

HOST = typer.Option("http://127.0.0.1:7071", "--host", envvar="FEDFUNC_HOST", help="the Function App / fedfunc host")
API_KEY = typer.Option(..., "--api-key", envvar="FEDFUNC_API_KEY", help="an API key from FEDFUNC_API_KEYS")
console = Console()


def call(method: str, host: str, api_key: str, path: str, body: object | None = None) -> dict:
    """``/api/{path}``; on an error, print the API's reason and exit 1 (2 if the host cannot be reached)."""
    url = f"{host.rstrip('/')}/api/{path}"
    try:
        r = requests.request(method, url, json=body, headers={"x-api-key": api_key}, timeout=60)
    except requests.RequestException as e:
        console.print(f"[red]cannot reach {escape(host)}: {escape(str(e))}[/]")
        raise typer.Exit(2) from None
    data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"message": r.text}
    if r.status_code >= 400:
        said = " — ".join(str(data[k]) for k in ("error", "message") if data.get(k)) or str(data)
        rule = f" (rule {data['rule']})" if data.get("rule") else ""
        console.print(f"[red]{method} /api/{escape(path)} → {r.status_code}[/] {escape(said + rule)}")
        raise typer.Exit(1)
    return data
