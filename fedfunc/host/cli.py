"""`fedfunc host [APP_DIR] [--port] [--state] ...`: run a Durable Functions Python app locally."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("host")
    def host(app_dir: Path = typer.Argument(Path("."), help="Folder holding function_app.py"),
             port: int = typer.Option(7071, help="HTTP port (0: any free port; see --ready-file)"),
             state: Path = typer.Option(None, help="SQLite state file (default APP_DIR/.fedfunc/host-state.sqlite)"),
             keys: Path = typer.Option(None, help="Host keys file, created if missing (default: the state file "
                                                  "with suffix .keys.json)"),
             max_activities: int = typer.Option(8, help="Activities run at once"),
             poll_interval: Optional[float] = typer.Option(
                 None, help="Seconds between storage listings for Event Grid events (default 0.5; "
                            "5 with --storage-log or --watch)"),
             storage_log: List[Path] = typer.Option([], help="Azurite's access log (Azurite without --silent): "
                                                             "each blob written is listed at once"),
             watch: List[Path] = typer.Option([], help="Folder where the storage emulator keeps its data (Azurite's "
                                                       "--location): a change there triggers a listing at once"),
             ready_file: Optional[Path] = typer.Option(None, help="Written once serving: JSON {pid, port, origin}"),
             bind: str = typer.Option("127.0.0.1", help="Address to listen on")) -> None:
        """Run any Durable Functions Python (v2 model) app locally and durably, without Core Tools."""
        from fedfunc.host.app_loader import AppLoadError
        from fedfunc.host.keys import KeysError
        from fedfunc.host.memory import tune_malloc
        from fedfunc.host.runtime import BindError, Host
        from fedfunc.host.store import StateError
        tune_malloc()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("azure").setLevel(logging.WARNING)
        try:
            asyncio.run(Host(app_dir, port, state, bind, max_activities, poll_interval, keys=keys,
                             watch=tuple(watch), storage_logs=tuple(storage_log), ready_file=ready_file).run_forever())
        except (AppLoadError, StateError, KeysError, BindError) as exc:
            typer.echo(f"fedfunc host: {exc}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            pass
