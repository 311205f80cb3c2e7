"""Many local silos through the real system: onboarding, then rounds, with memory and history per round.

Azurite (one account per silo), the Function App on ``fedfunc host``, every silo onboarded through the
admin API (provisioning, grants, a smoke job each), each silo owner's upload of its IID share of digits
(``silo_parts``: its own train and test parts) with its own key, a signed bundle, tickets, BlobCreated
events, the warm worker pool; the accuracy is pooled over the silos' test parts, and the run ends with an
evaluate-only round for the last model (not in the per-round table). After each round: the resident memory of
the host, Azurite and the worker pool, and the orchestration history the host keeps (rows of the run's
instance, of the round's instance, and of all instances).

    flock /tmp/fedfunc-heavy.lock env PYTHONPATH=. .venv/bin/python bench/scale.py \\
        [--silos 100] [--rounds 5] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.round_overhead import HP, round_figures  # noqa: E402
from fedfunc import layout  # noqa: E402
from fedfunc.backends.local import LocalProcessBackend  # noqa: E402
from fedfunc.devstack import DevStack  # noqa: E402
from fedfunc.protocol import round_instance_id  # noqa: E402
from fedfunc.tasks.builtin.datasets import silo_parts  # noqa: E402


def rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def history_rows(state: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT instance_id, COUNT(*) FROM history GROUP BY instance_id").fetchall())
    finally:
        db.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--silos", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="worker pool size (default: the number of cores)")
    args = p.parse_args()
    silos = [f"scale-{i:03d}" for i in range(args.silos)]
    extra = {"FEDFUNC_LOCAL_WORKERS": str(args.workers)} if args.workers else {}
    with tempfile.TemporaryDirectory() as tmp, DevStack(Path(tmp), pool_size=args.silos, extra_settings=extra) as stack:
        t0 = time.monotonic()
        stack.add_silos(silos, timeout=60 + 5 * args.silos)
        onboarded = time.monotonic() - t0
        t0 = time.monotonic()
        for silo, part in zip(silos, silo_parts("digits", args.silos, alpha=None, seed=0)):
            stack.upload_data(silo, part.files("digits"))
        uploaded = time.monotonic() - t0
        print(f"{args.silos} silos onboarded in {onboarded:.1f} s ({onboarded / args.silos:.2f} s each, side by side); "
              f"data uploaded in {uploaded:.1f} s", flush=True)
        run = stack.start_run({"silos": silos, "rounds": args.rounds, "round_deadline_s": 1800,
                               "bundle": stack.bundle("digits", HP)})
        samples, seen = [], 0
        pool = LocalProcessBackend(stack.home)

        def sample(status: dict) -> None:
            nonlocal seen
            done = len(status.get("history") or [])
            while seen < done:
                rows = history_rows(stack.host.state)
                pool_pid = (pool.status() or {}).get("pid")
                samples.append({"round": seen, "host_mb": rss_mb(stack.host.proc.pid),
                                "azurite_mb": rss_mb(stack.azurite.proc.pid), "pool_mb": rss_mb(pool_pid),
                                "rows_all": sum(rows.values()), "rows_run": rows.get(run, 0),
                                "rows_round": rows.get(round_instance_id(run, seen), 0)})
                seen += 1

        t0 = time.monotonic()
        status = stack.wait_run(run, timeout=1800 * args.rounds, on_status=sample, interval=0.2)
        total = time.monotonic() - t0
        if status["runtime_status"] != "Completed":
            raise SystemExit(f"run {run} {status['runtime_status']}: {status.get('error')}")
        report = json.loads(stack.download(layout.RUNS, layout.report(run, "json")))
    figures = [round_figures(r["timeline"]) for r in report["rounds"]]
    print(f"run of {args.rounds} rounds in {total:.1f} s; final accuracy {report['final_metrics']['accuracy']:.4f}")
    print(f"{'round':>5} {'wall s':>8} {'overhead s':>10} {'host MB':>8} {'azurite MB':>10} {'pool MB':>8} "
          f"{'history rows: all':>18} {'run':>6} {'round':>6}")
    for s, f in zip(samples, figures):
        print(f"{s['round']:>5} {f['wall']:>8.2f} {f['overhead']:>10.2f} {s['host_mb']:>8.0f} {s['azurite_mb']:>10.0f} "
              f"{s['pool_mb'] or 0:>8.0f} {s['rows_all']:>18} {s['rows_run']:>6} {s['rows_round']:>6}")
    print(f"median overhead {statistics.median(f['overhead'] for f in figures):.2f} s; "
          f"breakdown (medians): " + ", ".join(f"{k} {statistics.median(f[k] for f in figures):.2f}"
                                               for k in ("to_start", "to_collected", "aggregate", "evaluate")))


if __name__ == "__main__":
    main()
