"""`fedfunc host [APP_DIR] [--port] [--state]`: run a Durable Functions Python app locally."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("host")
    def host(app_dir: Path = typer.Argument(Path("."), help="Folder holding function_app.py"),
             port: int = typer.Option(7071, help="HTTP port"),
             state: Path = typer.Option(None, help="SQLite state file (default APP_DIR/.fedfunc/host-state.sqlite)"),
             max_activities: int = typer.Option(8, help="Activities run at once"),
             poll_interval: float = typer.Option(0.5, help="Seconds between storage polls for Event Grid events"),
             bind: str = typer.Option("127.0.0.1", help="Address to listen on")) -> None:
        """Run any Durable Functions Python (v2 model) app locally and durably, without Core Tools."""
        from fedfunc.host.app_loader import AppLoadError
        from fedfunc.host.runtime import Host
        from fedfunc.host.store import StateError
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("azure").setLevel(logging.WARNING)
        try:
            asyncio.run(Host(app_dir, port, state, bind, max_activities, poll_interval).run_forever())
        except (AppLoadError, StateError) as exc:
            typer.echo(f"fedfunc host: {exc}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            pass
