"""``fedfunc task new NAME`` and ``fedfunc task try DIR``: write a task, then try it in seconds, in-process."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

task_app = typer.Typer(no_args_is_help=True, help="Write your own task and try it before federating it.")
console = Console()


@task_app.command("new")
def new(name: str = typer.Argument(..., help="the task's name (what silo policies allow)"),
        folder: Optional[Path] = typer.Option(None, "--dir", help="where to write it (default: ./NAME)")) -> None:
    """Scaffold a task folder: task.toml, task.py (model, data reader, hyper-parameters), sample data, README."""
    from fedfunc.tasks.scaffold import new_task

    folder = folder or Path(name)
    try:
        written = new_task(folder, name)
    except (ValueError, FileExistsError) as e:
        raise typer.BadParameter(str(e)) from None
    console.print(f"task [bold]{name}[/] in {folder}/ ({len(written)} files); try it: fedfunc task try {folder}")


def silo_folders(root: Path) -> list[Path]:
    """Folders of ``root`` that hold a silo's data: ``<silo>/train/`` and ``<silo>/test/``."""
    return sorted(p for p in Path(root).iterdir() if (p / "train").is_dir() and (p / "test").is_dir())


@task_app.command("try")
def try_(folder: Path = typer.Argument(..., exists=True, file_okay=False, help="the task folder"),
         data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False,
                                             help="silo folders <silo>/train, <silo>/test (default: DIR/sample)"),
         rounds: int = typer.Option(3, "--rounds", min=1, max=100),
         set_: list[str] = typer.Option([], "--set", help="a hyper-parameter, NAME=VALUE (repeatable)"),
         centralized: bool = typer.Option(True, "--centralized/--no-centralized",
                                          help="also train the same model on all silos' data pooled"),
         seed: int = typer.Option(0, "--seed")) -> None:
    """Run the task as the silos would, in this process: each sample silo evaluates and trains, FedAvg
    aggregates, and the pooled test accuracy is printed per round. No storage, no host, no signing."""
    from fedfunc.security.cli import _hyperparams
    from fedfunc.silo.sources import DirDataSource
    from fedfunc.tasks.data import DataError
    from fedfunc.tasks.folder import TaskFolderError
    from fedfunc.tasks.loader import TaskError
    from fedfunc.tasks.loop import TaskOutputError
    from fedfunc.tasks.signing import prepare
    from fedfunc.tasks.simulation import LocalSilo, centralized_curve, simulate

    started = time.perf_counter()
    root = data or folder / "sample"
    silos = [LocalSilo.of(p.name, DirDataSource(p), label=str(p)) for p in silo_folders(root)] if root.is_dir() else []
    if not silos:
        raise typer.BadParameter(f"{root}: no silo folders (<silo>/train/ and <silo>/test/)")
    table = Table("round", "pooled test accuracy", "loss", "examples", title=f"{folder}: {len(silos)} silos")
    try:
        prepared = prepare(folder, _hyperparams(None, set_))
        console.print(f"task [bold]{prepared.toml.name}[/], hyper-parameters {json.dumps(prepared.task.hp.model_dump())}")
        history = simulate(prepared.task, prepared.initial, silos, rounds=rounds, seed=seed,
                           on_round=lambda r, m: table.add_row(str(r), f"{m['accuracy']:.4f}", f"{m['loss']:.4f}",
                                                               str(m["num_examples"])))
        central = centralized_curve(prepared.task, prepared.initial, silos, rounds=rounds, seed=seed) \
            if centralized else None
    except (DataError, TaskOutputError) as e:  # the task's code or the sample data, not the command line
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    except TaskError as e:
        console.print(f"[red]{e.rule}[/]: {e.message}")
        raise typer.Exit(1) from None
    except (TaskFolderError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    console.print(table)
    if central:
        console.print(f"centralized, same model and epochs on all silos' training data: accuracy "
                      f"{central[-1]['accuracy']:.4f} (federated {history[-1]['accuracy']:.4f})")
    console.print(f"done in {time.perf_counter() - started:.1f} s; sign it: fedfunc sign --task-dir {folder} "
                  "--key <scientist.pem> --out <name>.fedbundle")


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")
