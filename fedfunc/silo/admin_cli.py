"""``fedfunc silo add | list | disable | remove`` (an admin, through the HTTP API of a running host) and
``fedfunc silo policy`` (a local silo's owner, with the silo's own key)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fedfunc.api_client import API_KEY, HOST, call
from rich.table import Table

console = Console()
silo_app = typer.Typer(no_args_is_help=True, help="Onboard, list, disable and remove silos; a silo owner's policy.")

def _public_key_b64(value: str) -> str:
    from fedfunc.security.keys import load_public, public_b64
    try:
        return public_b64(load_public(value))
    except (ValueError, OSError) as e:
        raise typer.BadParameter(f"--trust-signer {value!r}: {e}") from None


@silo_app.command("add")
def add(
    name: str = typer.Argument(...),
    compute: str = typer.Option("local", "--compute"),
    trust_signer: list[str] = typer.Option([], "--trust-signer", help="scientist public key (.pub file or base64)"),
    allow_task: list[str] = typer.Option([], "--allow-task"),
    max_rounds_per_day: Optional[int] = typer.Option(None, "--max-rounds-per-day"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow onboarding until ready or failed"),
    host: str = HOST, api_key: str = API_KEY,
) -> None:
    """Onboard a silo. The policy options are a proposal for a new silo; an existing silo policy wins."""
    policy = {"trusted_signers": [_public_key_b64(k) for k in trust_signer], "allowed_tasks": allow_task,
              "max_rounds_per_day": max_rounds_per_day}
    started = time.monotonic()
    call("POST", host, api_key, "silos", {"name": name, "compute": compute, "policy": policy})
    if not wait:
        console.print(f"onboarding of [bold]{name}[/] started; follow it with GET /api/silos/{name}/onboarding")
        return
    with console.status(f"onboarding {name}") as status:
        while True:
            state = call("GET", host, api_key, f"silos/{name}/onboarding")
            status.update(f"onboarding {name}: {state.get('step') or state['runtime_status']}")
            if state["runtime_status"] in ("Completed", "Failed", "Terminated"):
                break
            time.sleep(0.3)
    if state["runtime_status"] != "Completed":
        console.print(f"[red]onboarding {name} failed[/]: {state.get('error') or state.get('output')}")
        raise typer.Exit(1)
    console.print(f"silo [bold]{name}[/] is ready ({time.monotonic() - started:.1f} s); it trains from the next round")


@silo_app.command("list")
def list_(host: str = HOST, api_key: str = API_KEY) -> None:
    """The silo registry."""
    silos = call("GET", host, api_key, "silos")["silos"]
    table = Table(title=f"{len(silos)} silos")
    for col in ("name", "status", "compute", "account", "trusted signers", "updated"):
        table.add_column(col)
    for s in silos:
        table.add_row(s["name"], s["status"], s["compute"], s["account"], ", ".join(s["trusted_signers"]),
                      s["updated_at"][:19])
    console.print(table)


@silo_app.command("disable")
def disable(name: str, host: str = HOST, api_key: str = API_KEY) -> None:
    """Leave a silo out from the next round on."""
    call("POST", host, api_key, f"silos/{name}/disable")
    console.print(f"silo [bold]{name}[/] disabled")


@silo_app.command("remove")
def remove(name: str, host: str = HOST, api_key: str = API_KEY) -> None:
    """Remove a silo from the registry."""
    call("DELETE", host, api_key, f"silos/{name}")
    console.print(f"silo [bold]{name}[/] removed")


@silo_app.command("policy")
def policy(
    name: str = typer.Argument(...),
    local_home: Path = typer.Option(Path(".fedfunc"), "--local-home", envvar="FEDFUNC_LOCAL_HOME"),
    set_: Optional[Path] = typer.Option(None, "--set", exists=True, dir_okay=False,
                                        help="replace the policy with this JSON file"),
) -> None:
    """Show or set a local silo's policy, as its owner: with the silo's own key, not through the orchestrator."""
    from fedfunc.security.policy import SiloPolicy, parse_policy, write_policy
    from fedfunc.silo.home import read_credentials, silo_home
    from fedfunc.silo.io import BlobSiloIO

    creds = read_credentials(silo_home(local_home, name))
    if set_ is not None:
        write_policy(creds.connection_string, SiloPolicy.model_validate_json(set_.read_text()), replace=True)
    current = parse_policy(BlobSiloIO.of(creds).read_policy())
    typer.echo(json.dumps(current.model_dump(mode="json"), indent=2))


def _files_of(path: Path) -> dict[str, bytes]:
    """A file, or every regular, non-hidden file under a folder, by path relative to it."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.is_symlink()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)}


def _part_files(task: str, part: str, paths: list[Path]) -> dict[str, bytes]:
    from fedfunc import layout
    from fedfunc.tasks.data import DataError, describe_file

    files = {}
    for path in paths:
        for rel, data in _files_of(path).items():
            where = str(path / rel) if path.is_dir() else str(path)
            try:
                detail = describe_file(rel, data, where)
            except DataError as e:
                raise typer.BadParameter(f"--{part}: {e}") from None
            files[layout.silo_data(task, part) + rel] = data
            console.print(f"  {part}: {where} ({detail})")
    return files


@silo_app.command("upload")
def upload(
    name: str = typer.Argument(...),
    task: str = typer.Option(..., "--task", help="the task this data is for (its name in task.toml)"),
    train: list[Path] = typer.Option([], "--train", exists=True,
                                     help="a file or folder for the training part (safetensors, CSV, Parquet, images)"),
    test: list[Path] = typer.Option([], "--test", exists=True, help="a file or folder for the test part"),
    builtin_part: Optional[str] = typer.Option(None, "--builtin-part", metavar="I/N",
                                               help="instead: part I of N of a built-in task's data (train and test)"),
    heldout: bool = typer.Option(False, "--heldout", help="instead: a built-in task's held-out set, as the test part "
                                                          "of an evaluator silo"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="with --builtin-part: Dirichlet label skew"),
    seed: int = typer.Option(0, "--seed"),
    local_home: Path = typer.Option(Path(".fedfunc"), "--local-home", envvar="FEDFUNC_LOCAL_HOME"),
) -> None:
    """Upload a local silo's data, as its owner: with the silo's own key, into its own ``data`` container,
    under ``{task}/train/`` and ``{task}/test/`` (the test part never leaves the silo; only aggregate
    evaluation figures do). Every file of a known format is parsed first; nothing is uploaded if one fails."""
    import re

    from fedfunc.contracts import TASK_NAME
    from fedfunc.silo.home import silo_home
    from fedfunc.silo.local import upload_silo_data

    if not re.match(TASK_NAME, task):
        raise typer.BadParameter(f"--task {task!r}: lowercase letters, digits, '_' or '-', starting with a letter")
    chosen = [bool(train or test), builtin_part is not None, heldout]
    if sum(chosen) != 1:
        raise typer.BadParameter("give --train/--test, or --builtin-part, or --heldout")
    if builtin_part is not None or heldout:
        files = _builtin_files(task, builtin_part, alpha, seed)
    else:
        files = {**_part_files(task, "train", train), **_part_files(task, "test", test)}
    paths = upload_silo_data(silo_home(local_home, name), files)
    console.print(f"uploaded {len(paths)} file(s) to silo {name}: data/{task}/")


def _builtin_files(task: str, part: str | None, alpha: float | None, seed: int) -> dict[str, bytes]:
    from fedfunc import layout
    from fedfunc.tasks.builtin import UnknownTask
    from fedfunc.tasks.builtin.datasets import DATA_FILE, load, silo_parts

    try:
        if part is None:
            return {layout.silo_data(task, "test") + DATA_FILE: load(task)[1].to_bytes()}
        try:
            i, n = (int(v) for v in part.split("/"))
            assert 1 <= i <= n
        except (ValueError, AssertionError):
            raise typer.BadParameter(f"--builtin-part {part!r}: expected I/N with 1 ≤ I ≤ N") from None
        return silo_parts(task, n, alpha=alpha, seed=seed)[i - 1].files(task)
    except UnknownTask as e:
        raise typer.BadParameter(f"--task: {e}") from None
