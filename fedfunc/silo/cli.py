"""``fedfunc silo-job``: the command a silo job runs on AML (and by hand on a local silo home);
``fedfunc silo-pool``: the warm worker pool local silo jobs start from (``fedfunc.silo.pool``).

``silo-job`` is a thin supervisor: it runs the real job in a child process and, if that child dies
without reporting (segfault, OOM kill), publishes ``failed.json`` for it, so the orchestrator always
hears back. ``--worker`` (internal) is the child.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from fedfunc.contracts import SiloJobRequest


def _io(aml: bool, data: Path | None, model: Path | None, outbox: Path | None, policy: Path | None,
        bundle: Path | None = None):
    from fedfunc.silo.io import BlobSiloIO, MountedSiloIO

    if aml:
        missing = [n for n, v in (("--data", data), ("--model", model), ("--outbox", outbox)) if v is None]
        if missing:
            raise typer.BadParameter(f"--aml needs {', '.join(missing)}")
        return MountedSiloIO(data, model, outbox, policy, bundle)
    from fedfunc.silo.home import home_from_env

    return BlobSiloIO.from_home(home_from_env())


def silo_job(
    request: Path = typer.Option(..., "--request", exists=True, dir_okay=False, help="the SiloJobRequest JSON"),
    aml: bool = typer.Option(False, "--aml", help="inputs mounted by AML instead of the silo home's storage"),
    data: Optional[Path] = typer.Option(None, "--data", help="AML: the silo's data container, mounted"),
    model: Optional[Path] = typer.Option(None, "--model", help="AML: the global model file"),
    outbox: Optional[Path] = typer.Option(None, "--outbox", help="AML: the silo's outbox container, mounted rw"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="AML: the silo's policy/policy.json"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="AML: the signed task bundle the job names"),
    worker: bool = typer.Option(False, "--worker", hidden=True),
) -> None:
    """Run one silo job (train, or evaluate only) from a job request."""
    from fedfunc.silo.runner import JobFailed, run_job
    from fedfunc.silo.supervise import REPORTED, crash_reason, report_for

    from pydantic import ValidationError

    from fedfunc.validation import describe
    try:
        req = SiloJobRequest.model_validate_json(request.read_bytes())
    except ValidationError as e:
        raise typer.BadParameter(f"--request {request}: not a silo job request: {describe(e)}") from None
    if worker:
        try:
            run_job(req, _io(aml, data, model, outbox, policy, bundle))
        except JobFailed as e:
            typer.echo(f"silo job {req.job_key} failed: {e.reason}", err=True)
            raise typer.Exit(REPORTED) from None
        typer.echo(f"silo job {req.job_key}: {'update' if req.mode == 'train' else 'evaluation'} published")
        return
    args = ["--request", str(request)] + (["--aml"] if aml else []) + [
        a for flag, v in (("--data", data), ("--model", model), ("--outbox", outbox), ("--policy", policy),
                          ("--bundle", bundle))
        if v is not None for a in (flag, str(v))]
    child = subprocess.run([sys.executable, "-m", "fedfunc", "silo-job", *args, "--worker"])
    if child.returncode == REPORTED:
        raise typer.Exit(1)
    if child.returncode != 0:
        report_for(req, _io(aml, data, model, outbox, policy, bundle), crash_reason(child.returncode))
        raise typer.Exit(1)


def silo_smoke(
    smoke_id: str = typer.Option(..., "--id", help="onboarding attempt id"),
    aml: bool = typer.Option(False, "--aml", help="on AML: folders mounted by AML, storage as the managed identity"),
    silo: Optional[str] = typer.Option(None, "--silo", help="AML: this silo's name"),
    data: Optional[Path] = typer.Option(None, "--data", help="AML: the silo's data container, mounted"),
    outbox: Optional[Path] = typer.Option(None, "--outbox", help="AML: the silo's outbox container, mounted rw"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="AML: the silo's policy/policy.json"),
    models_url: Optional[str] = typer.Option(None, "--models-url", help="AML: the orchestrator's models container"),
) -> None:
    """Onboarding smoke job: this silo can read its data and write its outbox, and nothing else."""
    from fedfunc.silo.smoke import run_mounted_smoke, run_smoke

    if aml:
        missing = [n for n, v in (("--silo", silo), ("--data", data), ("--outbox", outbox), ("--policy", policy),
                                  ("--models-url", models_url)) if v is None]
        if missing:
            raise typer.BadParameter(f"--aml needs {', '.join(missing)}")
        from fedfunc.silo.io import MountedSiloIO
        result = run_mounted_smoke(MountedSiloIO(data, data, outbox, policy), silo, smoke_id, models_url)
    else:
        from fedfunc.silo.home import home_from_env, read_credentials
        result = run_smoke(read_credentials(home_from_env()), smoke_id)
    typer.echo(json.dumps(result, sort_keys=True))
    if not result["ok"]:
        raise typer.Exit(1)


def silo_serve(
    inbox: str = typer.Option(..., "--inbox", help="the orchestrator's inbox container URL"),
    run: str = typer.Option(..., "--run", help="the run whose rounds this job serves"),
    silo: str = typer.Option(..., "--silo", help="this silo's name"),
    data: Path = typer.Option(..., "--data", help="the silo's data container, mounted"),
    outbox: Path = typer.Option(..., "--outbox", help="the silo's outbox container, mounted rw"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="the run's signed task bundle, mounted"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="the silo's policy/policy.json"),
    aml: bool = typer.Option(True, "--aml/--no-aml", hidden=True),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="seconds between looks at the inbox"),
    idle: float = typer.Option(600.0, "--idle", min=1, help="seconds without a new request before the job ends"),
) -> None:
    """A silo's long-lived AML job for a whole run: each round's ticketed request, checked as a per-round job."""
    from azure.storage.blob import ContainerClient

    from fedfunc.silo.io import RunJobSiloIO
    from fedfunc.silo.serve import BlobInbox, inbox_prefix, serve
    from fedfunc.storage import credential

    identity = None if "?" in inbox else credential()  # a SAS in the URL (tests), else the job's identity
    io = RunJobSiloIO(data, outbox, policy, bundle, credential=identity)
    ran = serve(BlobInbox(ContainerClient.from_container_url(inbox, credential=identity), inbox_prefix(run, silo)),
                lambda: io, run=run, silo=silo, poll_s=poll, idle_s=idle)
    typer.echo(f"silo {silo}: served {len(ran)} round(s) of {run}")


def silo_pool(
    home: Path = typer.Option(..., "--home", file_okay=False, help="the local home whose silos' jobs it runs"),
    workers: int = typer.Option(..., "--workers", min=1, max=256, help="jobs running at once"),
    idle: float = typer.Option(120.0, "--idle", min=1, help="seconds without a job before the pool ends"),
) -> None:
    """The warm worker pool local silo jobs start from (started by the local backend when needed)."""
    from fedfunc.silo.pool import serve

    serve(home, workers, idle)


def register(app: typer.Typer) -> None:
    from fedfunc.silo.admin_cli import silo_app

    app.command("silo-job")(silo_job)
    app.command("silo-smoke")(silo_smoke)
    app.command("silo-pool", hidden=True)(silo_pool)
    app.command("silo-serve")(silo_serve)
    app.add_typer(silo_app, name="silo")
