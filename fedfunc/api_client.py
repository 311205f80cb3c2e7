"""The CLI's one way to call the Function App's HTTP API: host and API key from options or the environment.
What the API says is printed as text (it may quote silo-written reasons), never read as rich markup."""
from __future__ import annotations

import requests
import typer

from fedfunc.cli import CliError

HOST = typer.Option("http://127.0.0.1:7071", "--host", envvar="FEDFUNC_HOST", help="the Function App / fedfunc host")
API_KEY = typer.Option(..., "--api-key", envvar="FEDFUNC_API_KEY", help="an API key from FEDFUNC_API_KEYS")

def call(method: str, host: str, api_key: str, path: str, body: object | None = None,
         data: bytes | None = None) -> dict:
    """``/api/{path}`` with a JSON ``body`` or raw ``data``; ``CliError`` with the API's reason (exit 1), or
    exit 2 if the host cannot be reached or does not answer JSON."""
    url = f"{host.rstrip('/')}/api/{path}"
    headers = {"x-api-key": api_key, **({"content-type": "application/octet-stream"} if data is not None else {})}
    try:
        r = requests.request(method, url, json=body, data=data, headers=headers, timeout=60)
    except requests.RequestException as e:
        raise CliError(f"cannot reach {host}: {type(e).__name__}", exit_code=2) from None
    try:
        data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"message": r.text}
    except ValueError:
        raise CliError(f"{method} /api/{path} → {r.status_code}: the answer is not JSON", exit_code=2) from None
    if not isinstance(data, dict):
        data = {"message": str(data)}
    if r.status_code >= 400:
        said = " — ".join(str(data[k]) for k in ("error", "message") if data.get(k)) or str(data)
        rule = f" (rule {data['rule']})" if data.get("rule") else ""
        raise CliError(f"{method} /api/{path} → {r.status_code} {said[:500]}{rule}")
    return data
