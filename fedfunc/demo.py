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
from rich.text import Text

from fedfunc.run_cli import STRATEGY, STRATEGY_OPTION, strategy_options
from fedfunc.security.cli import CLIP_NORM, PROXIMAL_MU, parse_clip_norm

console = Console()


HELDOUT_SILO = "heldout"


def _local_silos(task_name: str, parts) -> list:
    from fedfunc.tasks.data import MemoryDataSource
    from fedfunc.tasks.simulation import LocalSilo

    return [LocalSilo.of(f"site-{i + 1}", MemoryDataSource(p.files(task_name)), f"{task_name}/")
            for i, p in enumerate(parts)]


def run_demo(*, task_name: str, n_silos: int, rounds: int, alpha: float | None, local_epochs: int | None,
             lr: float | None, seed: int, workdir: Path, deadline: float, heldout: bool = True,
             strategy: dict | str = "fedavg", silo_side: dict | None = None) -> dict:
    from fedfunc.devstack import DevStack
    from fedfunc.report import render_html, render_png
    from fedfunc.tasks.builtin import task_dir
    from fedfunc.tasks.builtin.datasets import DATA_FILE, load, silo_parts
    from fedfunc.tasks.signing import prepare
    from fedfunc.tasks.simulation import centralized_curve

    hyperparams = {k: v for k, v in {"epochs": local_epochs, "lr": lr, "seed": seed}.items() if v is not None}
    root = workdir / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    silos = [f"site-{i + 1}" for i in range(n_silos)]
    parts = silo_parts(task_name, n_silos, alpha=alpha, seed=seed)

    with DevStack(root, mlflow_store=workdir.resolve() / "mlflow" / "mlflow.db",
                  pool_size=n_silos + int(heldout)) as stack:
        console.print(f"[bold]fedfunc host[/] on {stack.host.origin} (state {stack.host.state}); Azurite in {stack.azurite.location}")
        t0 = time.monotonic()
        stack.add_silos(silos)
        console.print(f"  onboarded {n_silos} silo(s) side by side in {time.monotonic() - t0:.1f}s")
        for silo, part in zip(silos, parts):
            stack.upload_data(silo, part.files(task_name))
            if n_silos <= 12:
                console.print(f"  [cyan]{silo}[/] uploaded {len(part.train)} train / {len(part.test)} test samples, "
                              f"labels {sorted(set(part.train.y.tolist()))}")
        if heldout:
            stack.add_silo(HELDOUT_SILO)
            held = load(task_name)[1]
            stack.upload_data(HELDOUT_SILO, {f"{task_name}/test/{DATA_FILE}": held.to_bytes()})
            console.print(f"  onboarded evaluator [cyan]{HELDOUT_SILO}[/] (the held-out set, {len(held)} samples; "
                          "it evaluates, never trains)")
        t0 = time.monotonic()
        bundle = stack.upload_bundle(stack.sign(task_name, hyperparams, **(silo_side or {})))
        console.print(f"signed and uploaded bundle {bundle['bundle'][:16]} ({len(bundle['files'])} files) in "
                      f"{time.monotonic() - t0:.1f}s; local {bundle['hyperparams']}, silo side {bundle['silo_side']}")
        spec = {"bundle": bundle["bundle"], "silos": silos, "rounds": rounds, "round_deadline_s": deadline,
                "evaluators": [HELDOUT_SILO] if heldout else [], "strategy": strategy}
        run_id = stack.start_run(spec)
        console.print(f"run [bold]{run_id}[/]: {task_name}, {n_silos} silos, {rounds} rounds, "
                      f"{'IID' if alpha is None else f'Dirichlet α={alpha}'}, strategy {strategy}")
        console.print("  run page (while the demo runs): ", Text(stack.run_page_link(run_id)), soft_wrap=True)
        status = _follow(stack, run_id, rounds)
        if status["runtime_status"] != "Completed":
            raise typer.Exit(_fail(status))

        prepared = prepare(task_dir(task_name), hyperparams)
        baseline = centralized_curve(prepared.task, prepared.initial, _local_silos(task_name, parts), rounds=rounds,
                                     seed=seed)[-1]
        report = json.loads(stack.download("runs", f"{run_id}/report.json"))
        report["baseline"] = {"accuracy": baseline["accuracy"], "loss": baseline["loss"],
                              "how": f"same model trained centrally on all {sum(len(p.train) for p in parts)} "
                                     f"training samples for {rounds} × {prepared.task.hp.epochs} epochs, pooled "
                                     "test parts"}
        out = root / "report"
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.png").write_bytes(render_png(report))
        (out / "report.html").write_text(render_html(report))
    _summary(run_id, report, out, stack.mlflow_ui_command())
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
            m = status.get("metrics") or {}
            if m.get("accuracy") is not None:
                detail = f"pooled test acc {m['accuracy']:.3f} loss {m['loss']:.3f}"
                if "heldout_accuracy" in m:
                    detail += f", held-out {m['heldout_accuracy']:.3f}"
            if current.get("phase"):
                what = "final evaluation" if current.get("evaluate_only") else f"r{current['round'] + 1}"
                detail += f" | {what} {current['phase']}"
            progress.update(bar, completed=len(history), detail=detail)

        return stack.wait_run(run_id, timeout=3600, on_status=show)


def _fail(status: dict) -> int:
    console.print(f"[red]run {status['run']} {status['runtime_status']}[/]: {status.get('error') or status.get('output')}")
    return 1


def _summary(run_id: str, report: dict, out: Path, mlflow_ui: str) -> None:
    table = Table(title=f"run {run_id}", show_header=False)
    final = report["final_metrics"] or {}
    table.add_row("rounds", str(report["rounds_completed"]))
    table.add_row("strategy", f"{report['strategy']['name']} {json.dumps(report['strategy']['options'])}")
    table.add_row("final accuracy, pooled over the silos' test parts",
                  f"{final.get('accuracy', float('nan')):.4f} (loss {final.get('loss', float('nan')):.4f}, "
                  f"{final.get('num_examples')} examples)")
    if "heldout_accuracy" in final:
        table.add_row("final accuracy on the held-out set (evaluator silo)",
                      f"{final['heldout_accuracy']:.4f} ({final['heldout_num_examples']} examples)")
    table.add_row("centralized baseline", f"{report['baseline']['accuracy']:.4f} ({report['baseline']['how']})")
    table.add_row("report", f"{out / 'report.json'}\n{out / 'report.png'}\n{out / 'report.html'}")
    table.add_row("MLflow", Text(f"{mlflow_ui}\n(then open http://127.0.0.1:5000, experiment 'fedfunc', run {run_id})"))
    console.print(table)


def demo(
    silos: int = typer.Option(3, "--silos", min=1, max=500, help="local silos (one Azurite account each)"),
    rounds: int = typer.Option(10, "--rounds", min=1, help="FL rounds"),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.01, help="Dirichlet α label skew; omit for IID"),
    local_epochs: Optional[int] = typer.Option(None, "--local-epochs", min=1, help="local epochs per round"),
    lr: Optional[float] = typer.Option(None, "--lr", min=1e-6, help="local learning rate"),
    seed: int = typer.Option(0, "--seed"),
    task: str = typer.Option("digits", "--task", help="a built-in task: digits | breast_cancer"),
    workdir: Path = typer.Option(Path(".fedfunc/demo"), "--workdir", help="where each demo's state goes"),
    deadline: float = typer.Option(300, "--round-deadline", help="seconds a round waits for silos"),
    heldout: bool = typer.Option(True, "--heldout/--no-heldout",
                                 help="also onboard an evaluator silo holding the task's held-out set"),
    strategy: str = typer.Option("fedavg", "--strategy", help=STRATEGY.help),
    strategy_option: Optional[list[str]] = STRATEGY_OPTION,
    proximal_mu: Optional[float] = typer.Option(None, "--proximal-mu", min=0,
                                                help=PROXIMAL_MU.help + "; default 0.01 with --strategy fedprox, else 0"),
    clip_norm: Optional[str] = typer.Option(None, "--clip-norm", help=CLIP_NORM.help),
) -> None:
    """Run a federated training across local silos on fedfunc host + Azurite and print the report.

    The demo signs its own bundle, so it takes the silo side (--proximal-mu, --clip-norm) as well as the
    server side (--strategy, --strategy-option); with a real bundle they are set apart: `fedfunc sign`
    and `fedfunc run start`."""
    run_demo(task_name=task, n_silos=silos, rounds=rounds, alpha=alpha, local_epochs=local_epochs, lr=lr,
             seed=seed, workdir=workdir, deadline=deadline, heldout=heldout,
             strategy={"name": strategy, "options": strategy_options(strategy_option)},
             silo_side={"proximal_mu": (0.01 if strategy == "fedprox" else 0.0) if proximal_mu is None else proximal_mu,
                        "clip_norm": parse_clip_norm(clip_norm)})




def up(
    silos: int = typer.Option(3, "--silos", min=0, max=500, help="local silos to onboard with data at first start"),
    task: str = typer.Option("digits", "--task", help="the built-in task whose data the silos get"),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.01),
    seed: int = typer.Option(0, "--seed"),
    port: int = typer.Option(7071, "--port"),
    workdir: Path = typer.Option(Path(".fedfunc/up"), "--workdir", help="kept across restarts"),
) -> None:
    """Start a local setup and keep it running: Azurite, the Function App on fedfunc host, silos with data."""
    from fedfunc.devstack import DevStack
    from fedfunc.tasks.builtin.datasets import silo_parts

    stack = DevStack(workdir, port=port, pool_size=silos).start()
    try:
        existing = {s["name"] for s in stack.api("GET", "/api/silos", role="admin")["silos"]}
        parts = silo_parts(task, silos, alpha=alpha, seed=seed) if silos else []
        for i, part in enumerate(parts):
            name = f"site-{i + 1}"
            if name not in existing:
                stack.add_silo(name)
                stack.upload_data(name, part.files(task))
                console.print(f"onboarded [cyan]{name}[/] with {len(part.train)} train / {len(part.test)} test "
                              f"samples of {task}")
        console.print(f"""[bold]fedfunc is up[/] on {stack.host.origin} (Ctrl-C stops it; state in {stack.root})
  export FEDFUNC_HOST={stack.host.origin}
  export FEDFUNC_API_KEY={stack.scientist_key}        # scientist; admin key: {stack.admin_key}
  export FEDFUNC_LOCAL_HOME={stack.home}
  host master key (Durable management, Event Grid and admin routes: x-functions-key header or ?code=): {stack.master_key}
  all host keys (system keys, topic keys): {stack.host.keys_path}
  scientist signing key: {stack.root / 'keys' / 'scientist.pem'} (public: {stack.root / 'keys' / 'scientist.pub'})
  MLflow: {stack.mlflow_ui_command()}
  a run's page: fedfunc run open RUN_ID""")
        while stack.host.proc and stack.host.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("up")(up)
