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
from rich.markup import escape
from rich.table import Table

from fedfunc.api_client import API_KEY, HOST
from fedfunc.cli_args import json_object, key_values

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


def _hyperparams(config: Path | None, sets: list[str]) -> dict:
    values = json_object(config, "--hyperparams", "hyper-parameters") if config is not None else {}
    return {**values, **key_values(sets, "--set", "epochs=5")}


PROXIMAL_MU = typer.Option(0.0, "--proximal-mu", min=0,
                           help="FedProx: μ of the proximal term μ/2‖w − w_global‖² in every silo's training (0 = off)")
CLIP_NORM = typer.Option(None, "--clip-norm", help="clip every update to this ‖update − global‖₂ in the silo; 'off' "
                                                 "for none; default: 10 × ‖initial model‖₂ (fedfunc.pipeline.config)")


def parse_clip_norm(value: str | None) -> float | str | None:
    if value is None or value == "off":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"--clip-norm {value!r}: a positive number, or 'off'") from None


def parse_transform(value: str) -> dict:
    """``NAME`` or ``NAME:KEY=VALUE,...`` (values read as JSON where they can be) as a transform spec."""
    name, _, rest = value.partition(":")
    return {"name": name, "options": key_values([rest] if rest else [], "--transform", "clip:max_norm=5", sep=",")}


def sign(
    task_dir: Optional[Path] = typer.Option(None, "--task-dir", exists=True, file_okay=False,
                                            help="the task folder (task.toml + code), e.g. from `fedfunc task new`"),
    task: Optional[str] = typer.Option(None, "--task", help="instead: a built-in task (digits, breast_cancer)"),
    key: Path = typer.Option(..., "--key", exists=True, dir_okay=False, help="the scientist's private key (PEM)"),
    out: Path = typer.Option(..., "--out", help="where to write the signed bundle (.fedbundle)"),
    hyperparams: Optional[Path] = typer.Option(None, "--hyperparams", exists=True, dir_okay=False,
                                               help="JSON object of hyper-parameters (the task's defaults otherwise)"),
    set_: list[str] = typer.Option([], "--set", help="one hyper-parameter, NAME=VALUE (repeatable; after --hyperparams)"),
    proximal_mu: float = PROXIMAL_MU,
    transform: list[str] = typer.Option([], "--transform", help="a silo-side update transform, NAME or "
                                        "NAME:KEY=VALUE,... (repeatable, in order; e.g. delta)"),
    clip_norm: Optional[str] = CLIP_NORM,
) -> None:
    """Sign a task: its files, requirements, hyper-parameters, initial weights and silo side, in one bundle.

    The silo side — FedProx's μ, the update transforms and the clip norm every silo clips its update to —
    is signed with the code: no run can change it. Upload the bundle with `fedfunc bundle upload` and
    name the hash it prints in a run spec's "bundle".
    """
    from fedfunc.security import keys
    from fedfunc.security.bundle import open_bundle
    from fedfunc.tasks.builtin import UnknownTask, task_dir as builtin_dir
    from fedfunc.tasks.folder import TaskFolderError
    from fedfunc.tasks.loader import TaskError
    from fedfunc.tasks.signing import build_bundle

    if (task_dir is None) == (task is None):
        raise typer.BadParameter("give exactly one of --task-dir or --task")
    try:
        folder = task_dir or builtin_dir(task)
        data = build_bundle(folder, keys.load_private(key), _hyperparams(hyperparams, set_), proximal_mu=proximal_mu,
                            transforms=[parse_transform(t) for t in transform], clip_norm=parse_clip_norm(clip_norm))
    except (TaskFolderError, UnknownTask, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    except TaskError as e:
        raise typer.BadParameter(f"{e.rule}: {e.message}") from None
    out.write_bytes(data)
    bundle = open_bundle(data).verify(None)
    console.print(f"signed bundle of task [bold]{bundle.manifest.task}[/]: {len(bundle.files)} files, "
                  f"{len(data)} bytes, signer {bundle.signer}, hyper-parameters {bundle.config.hyperparams}, "
                  f"proximal_mu {bundle.config.proximal_mu}, transforms "
                  f"{escape(json.dumps([t.model_dump() for t in bundle.config.transforms]))}")
    console.print(f"bundle hash {bundle.code_hash} → {out}")


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


bundle_app = typer.Typer(no_args_is_help=True, help="Upload and inspect signed task bundles.")


@bundle_app.command("upload")
def bundle_upload(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a .fedbundle from `fedfunc sign`"),
                  host: str = HOST, api_key: str = API_KEY) -> None:
    """Store a signed bundle in the orchestrator's storage (once, under its hash); prints the hash for a run spec."""
    from fedfunc.api_client import call

    stored = call("POST", host, api_key, "bundles", data=file.read_bytes())
    console.print(f"bundle [bold]{stored['bundle']}[/] (task {stored['task']}, signer {stored['signer']}) is stored; "
                  f'run it with a spec naming "bundle": "{stored["bundle"]}"')


@bundle_app.command("show")
def bundle_show(file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """A bundle's signed manifest (files and hashes, requirements, hyper-parameters) and its signer."""
    from fedfunc.security import Refused
    from fedfunc.security.bundle import open_bundle

    try:
        bundle = open_bundle(file.read_bytes()).verify(None)
    except Refused as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"bundle": bundle.code_hash, "signer": bundle.signer,
                           **bundle.manifest.model_dump(mode="json")}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen)
    app.command("sign")(sign)
    app.command("audit")(audit)
    app.add_typer(bundle_app, name="bundle")
