"""``fedfunc demo``: a real federated training across local silos, end to end, from one command.

Azurite and the Function App on ``fedfunc host`` start; silos are onboarded through the admin API;
each silo owner uploads its partition with its own key; a scientist signs the code bundle and
starts a run through the HTTP API; the run's progress is shown per round, then the report.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def _partitions(task, n_silos: int, alpha: float | None, seed: int):
    from fedfunc.tasks.partition import partition

    data = task.load_dataset()
    return data, partition(data.y_train, n_silos, alpha=alpha, seed=seed)


def run_demo(*, task_name: str, n_silos: int, rounds: int | None, alpha: float | None, local_epochs: int | None,
             lr: float | None, seed: int, workdir: Path, deadline: float) -> dict:
    from fedfunc.devstack import DevStack
    from fedfunc.report import render_png
    from fedfunc.tasks.centralized import train_centralized
    from fedfunc.tasks.registry import get_task

    task = get_task(task_name)
    hp = task.default_hyperparams
    hyperparams = {"epochs": local_epochs or hp.epochs, "lr": lr or hp.lr, "batch_size": hp.batch_size, "seed": seed}
    rounds = rounds or task.default_rounds
    root = workdir / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    silos = [f"site-{i + 1}" for i in range(n_silos)]

    with DevStack(root, pool_size=n_silos) as stack:
        console.print(f"[bold]fedfunc host[/] on {stack.host.origin} (state {stack.host.state}); Azurite in {stack.azurite.location}")
        data, parts = _partitions(task, n_silos, alpha, seed)
        t0 = time.monotonic()
        stack.add_silos(silos)
        console.print(f"  onboarded {n_silos} silo(s) side by side in {time.monotonic() - t0:.1f}s")
        for silo, idx in zip(silos, parts):
            stack.upload_data(silo, task_name, data.x_train[idx], data.y_train[idx])
            if n_silos <= 12:
                console.print(f"  [cyan]{silo}[/] uploaded {len(idx)} samples, labels "
                              f"{sorted(set(data.y_train[idx].tolist()))}")
        spec = {"task": task_name, "silos": silos, "rounds": rounds, "round_deadline_s": deadline, "seed": seed,
                "bundle": stack.signed_bundle(task_name, hyperparams)}
        run_id = stack.start_run(spec)
        console.print(f"run [bold]{run_id}[/]: {task_name}, {n_silos} silos, {rounds} rounds, "
                      f"{'IID' if alpha is None else f'Dirichlet α={alpha}'}, local {hyperparams}")
        status = _follow(stack, run_id, rounds)
        if status["runtime_status"] != "Completed":
            raise typer.Exit(_fail(status))

        baseline = train_centralized(task, epochs=rounds * hyperparams["epochs"], lr=hyperparams["lr"],
                                     batch_size=hyperparams["batch_size"], seed=seed)
        report = json.loads(stack.download("runs", f"{run_id}/report.json"))
        report["baseline"] = {"accuracy": baseline["accuracy"], "loss": baseline["loss"],
                              "how": f"same model trained centrally on all {len(data.y_train)} samples for "
                                     f"{rounds * hyperparams['epochs']} epochs"}
        out = root / "report"
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.png").write_bytes(render_png(report))
    _summary(run_id, report, out)
    return report


def _follow(stack, run_id: str, rounds: int) -> dict:
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("rounds", total=rounds, detail="starting")

        def show(status: dict) -> None:
            history = status.get("history") or []
            current = status.get("current_round") or {}
            detail = ""
            if history:
                m = history[-1]["metrics"]
                detail = f"round {history[-1]['round'] + 1}: loss {m['loss']:.3f} acc {m['accuracy']:.3f}"
            if current.get("phase"):
                detail += f" | r{current['round'] + 1} {current['phase']} ({len(current.get('received', []))} in)"
            progress.update(bar, completed=len(history), detail=detail)

        return stack.wait_run(run_id, timeout=3600, on_status=show)


def _fail(status: dict) -> int:
    console.print(f"[red]run {status['run']} {status['runtime_status']}[/]: {status.get('error') or status.get('output')}")
    return 1


def _summary(run_id: str, report: dict, out: Path) -> None:
    table = Table(title=f"run {run_id}", show_header=False)
    final = report["final_metrics"]
    table.add_row("rounds", str(report["rounds_completed"]))
    table.add_row("final global accuracy", f"{final['accuracy']:.4f} (loss {final['loss']:.4f})")
    table.add_row("centralized baseline", f"{report['baseline']['accuracy']:.4f} ({report['baseline']['how']})")
    table.add_row("report", f"{out / 'report.json'}\n{out / 'report.png'}")
    console.print(table)


def demo(
    silos: int = typer.Option(3, "--silos", min=1, max=500, help="local silos (one Azurite account each)"),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, help="FL rounds (default: the task's)"),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.01, help="Dirichlet α label skew; omit for IID"),
    local_epochs: Optional[int] = typer.Option(None, "--local-epochs", min=1, help="local epochs per round"),
    lr: Optional[float] = typer.Option(None, "--lr", min=1e-6, help="local learning rate"),
    seed: int = typer.Option(0, "--seed"),
    task: str = typer.Option("digits", "--task", help="digits | breast_cancer"),
    workdir: Path = typer.Option(Path(".fedfunc/demo"), "--workdir", help="where each demo's state goes"),
    deadline: float = typer.Option(300, "--round-deadline", help="seconds a round waits for silos"),
) -> None:
    """Run a federated training across local silos on fedfunc host + Azurite and print the report."""
    run_demo(task_name=task, n_silos=silos, rounds=rounds, alpha=alpha, local_epochs=local_epochs, lr=lr,
             seed=seed, workdir=workdir, deadline=deadline)




def up(
    silos: int = typer.Option(3, "--silos", min=0, max=500, help="local silos to onboard with data at first start"),
    task: str = typer.Option("digits", "--task"),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.01),
    seed: int = typer.Option(0, "--seed"),
    port: int = typer.Option(7071, "--port"),
    workdir: Path = typer.Option(Path(".fedfunc/up"), "--workdir", help="kept across restarts"),
) -> None:
    """Start a local setup and keep it running: Azurite, the Function App on fedfunc host, silos with data."""
    from fedfunc.devstack import DevStack
    from fedfunc.tasks.registry import get_task

    stack = DevStack(workdir, port=port, pool_size=silos).start()
    try:
        existing = {s["name"] for s in stack.api("GET", "/api/silos", role="admin")["silos"]}
        data, parts = _partitions(get_task(task), silos, alpha, seed) if silos else (None, [])
        for i, idx in enumerate(parts):
            name = f"site-{i + 1}"
            if name not in existing:
                stack.add_silo(name)
                stack.upload_data(name, task, data.x_train[idx], data.y_train[idx])
                console.print(f"onboarded [cyan]{name}[/] with {len(idx)} samples of {task}")
        console.print(f"""[bold]fedfunc is up[/] on {stack.host.origin} (Ctrl-C stops it; state in {stack.root})
  export FEDFUNC_HOST={stack.host.origin}
  export FEDFUNC_API_KEY={stack.scientist_key}        # scientist; admin key: {stack.admin_key}
  export FEDFUNC_LOCAL_HOME={stack.home}
  host master key (Durable management, Event Grid and admin routes: x-functions-key header or ?code=): {stack.master_key}
  all host keys (system keys, topic keys): {stack.host.keys_path}
  scientist signing key: {stack.root / 'keys' / 'scientist.pem'} (public: {stack.root / 'keys' / 'scientist.pub'})""")
        while stack.host.proc and stack.host.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("up")(up)
