"""``fedfunc keygen``, ``fedfunc sign`` and ``fedfunc audit``."""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def keygen(stem: Path = typer.Argument(..., help="writes STEM.pem (private, 0600) and STEM.pub")) -> None:
    """Create an Ed25519 key pair: the orchestrator's ticket key or a scientist's code-signing key."""
    from fedfunc.security import keys

    key = keys.generate()
    try:
        priv, pub = keys.save_keypair(key, stem)
    except FileExistsError:
        raise typer.BadParameter(f"{stem}.pem exists; refusing to overwrite a private key") from None
    console.print(f"private key [bold]{priv}[/] (keep it secret), public key [bold]{pub}[/]")
    console.print(f"key id {keys.key_id(key.public_key())}; for a silo policy: {keys.public_b64(key.public_key())}")


def sign(
    task: str = typer.Option(..., "--task", help="task whose code is bundled, e.g. digits"),
    key: Path = typer.Option(..., "--key", exists=True, dir_okay=False, help="the scientist's private key (PEM)"),
    out: Path = typer.Option(..., "--out", help="where to write the signed bundle JSON"),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help='JSON {"hyperparams": {...}}; default: the task\'s defaults'),
    seed: int = typer.Option(0, "--seed", help="training seed when --config is not given"),
) -> None:
    """Bundle the installed training code of TASK with its config and sign it; put the output in a run spec."""
    from fedfunc.security import keys
    from fedfunc.security.bundle import build_bundle, sign_bundle
    from fedfunc.tasks import UnknownTask, get_task

    try:
        cfg = (json.loads(config.read_text()) if config is not None
               else {"hyperparams": get_task(task).default_hyperparams.model_copy(update={"seed": seed}).model_dump()})
        signed = sign_bundle(build_bundle(task, cfg), keys.load_private(key))
    except (ValueError, UnknownTask) as e:
        raise typer.BadParameter(str(e)) from None
    out.write_text(signed.model_dump_json(indent=2))
    console.print(f"signed bundle for task [bold]{task}[/]: code hash {signed.code_hash}, signer {signed.signer}, "
                  f"{len(signed.bundle.files)} files → {out}")


def _since(value: str | None) -> datetime | None:
    """``2h``, ``3d``, ``30m`` ago, or an ISO timestamp."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)([mhd])", value)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return datetime.now(timezone.utc) - timedelta(**{unit: int(m[1])})
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--since {value!r}: use 30m, 2h, 3d or an ISO timestamp") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def audit(
    run: Optional[str] = typer.Option(None, "--run"),
    silo: Optional[str] = typer.Option(None, "--silo"),
    kind: Optional[str] = typer.Option(None, "--kind", help="e.g. ticket_issued, job_refused, artifact_received"),
    since: Optional[str] = typer.Option(None, "--since", help="30m, 2h, 3d or an ISO timestamp"),
    silo_logs: bool = typer.Option(False, "--silo-logs", help="also read each silo's own log from its outbox"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the audit trail (orchestrator storage from FEDFUNC_STORAGE), filtered."""
    from fedfunc.cli import safe
    from fedfunc.registry import SiloRegistry
    from fedfunc.security.audit import AuditLog, silo_events
    from fedfunc.settings import load_settings
    from fedfunc.storage import table_service

    settings = load_settings(os.environ)
    tables = table_service(settings)
    at = _since(since)
    events = AuditLog.create(tables).query(run=run, silo=silo, kind=kind, since=at)
    if silo_logs:
        for record in SiloRegistry.create(tables).list():
            if silo is None or record.name == silo:
                events += [e for e in silo_events(record, since=at)
                           if (run is None or e.run == run) and (kind is None or e.kind == kind)]
    events.sort(key=lambda e: e.at)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
        return
    table = Table(title=f"audit trail ({len(events)} entries)")
    for col in ("at", "source", "kind", "run", "round", "silo", "detail"):
        table.add_column(col, overflow="fold")
    for e in events:
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items())
        table.add_row(*(safe(v) for v in (e.at.strftime("%Y-%m-%d %H:%M:%S"), e.source, e.kind, e.run or "",
                                          "" if e.round is None else e.round, e.silo or "", detail)))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen)
    app.command("sign")(sign)
    app.command("audit")(audit)
