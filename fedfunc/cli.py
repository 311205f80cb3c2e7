"""The `fedfunc` command. Each sub-command lives beside the code it drives and registers itself here."""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Federated learning on Azure Durable Functions: local host, runs, silos, security tools.")


def _register() -> None:
    from fedfunc.host.cli import register as register_host
    register_host(app)
    from fedfunc.silo.cli import register as register_silo
    register_silo(app)
    from fedfunc.security.cli import register as register_security
    register_security(app)
    from fedfunc.demo import register as register_demo
    register_demo(app)
    from fedfunc.run_cli import register as register_run
    register_run(app)
    from fedfunc.tasks.cli import register as register_task
    register_task(app)


def main() -> None:
    _register()
    app()
