"""Event latency of `fedfunc host`'s storage watcher (not a test): blob upload done → subscribed
function invoked, and the host's and Azurite's CPU while nothing happens.

Three modes on the same Azurite, one after the other:
- `poll`:  the watcher lists every subscribed container every 0.5 s (the host's behaviour before,
           still what it does when told nothing);
- `watch`: `--watch` on Azurite's data folder (inotify): any change lists every container, 5 s safety poll;
- `log`:   `--storage-log` on Azurite's access log (inotify): the blob written is listed at once, 5 s
           safety poll (what `fedfunc.devstack` uses).

    flock /tmp/fedfunc-heavy.lock .venv/bin/python bench/event_latency.py [--uploads 40] [--subscriptions 20] [--idle 20]

Latency is measured with one clock (both sides on this machine): the function writes `time.time()`
when invoked; the upload's end is taken right after `upload_blob` returns.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests
from azure.storage.blob import BlobServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedfunc.azurite import Azurite  # noqa: E402
from fedfunc.host.testing import HostProcess  # noqa: E402

APP = textwrap.dedent('''
    import json, os, time
    import azure.functions as func
    app = func.FunctionApp()

    @app.event_grid_trigger(arg_name="event")
    def on_blob(event: func.EventGridEvent) -> None:
        with open(os.environ["BENCH_OUT"], "a") as f:
            f.write(json.dumps({"subject": event.subject, "t": time.time()}) + "\\n")
''')
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def invoked(out: Path) -> dict[str, float]:
    if not out.exists():
        return {}
    return {r["subject"]: r["t"] for r in map(json.loads, out.read_text().splitlines())}


def measure(mode: str, az: Azurite, root: Path, args) -> dict:
    app_dir = root / mode
    app_dir.mkdir()
    (app_dir / "function_app.py").write_text(APP)
    out = app_dir / "out.jsonl"
    host_args = {"poll": ("--poll-interval", "0.5"), "watch": ("--watch", str(az.data_dir)),
                 "log": ("--storage-log", str(az.log_path))}[mode]
    host = HostProcess(app_dir, app_dir / "state.sqlite", env={"BENCH_OUT": str(out)}, args=host_args).start()
    try:
        account = az.silo_accounts[0]
        service = BlobServiceClient.from_connection_string(account.connection_string)
        containers = [f"{mode}-{i:03d}" for i in range(args.subscriptions)]
        for i, name in enumerate(containers):
            if not service.get_container_client(name).exists():
                service.create_container(name)
            spec = {"function": "on_blob", "connection": account.connection_string, "container": name}
            requests.put(host.url(f"/runtime/webhooks/eventgrid/subscriptions/s{i}"), json=spec,
                         headers=host.headers).raise_for_status()
        time.sleep(2)  # settle: start-up work and the first listings are not idle time
        host_cpu, az_cpu, t0 = cpu_seconds(host.proc.pid), cpu_seconds(az.proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle_wall = time.monotonic() - t0
        idle = {"host": (cpu_seconds(host.proc.pid) - host_cpu) / idle_wall,
                "azurite": (cpu_seconds(az.proc.pid) - az_cpu) / idle_wall}
        latencies = []
        payload = os.urandom(64 * 1024)
        for n in range(args.uploads):
            container = containers[n % len(containers)]
            name = f"runs/u{n}/update.safetensors"
            service.get_blob_client(container, name).upload_blob(payload, overwrite=True)
            done = time.time()
            subject = f"/blobServices/default/containers/{container}/blobs/{name}"
            deadline = time.monotonic() + 30
            while subject not in (seen := invoked(out)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{mode}: no event for {subject}")
                time.sleep(0.002)
            latencies.append((seen[subject] - done) * 1000)
            time.sleep(random.uniform(0.05, 0.3))  # uploads not in step with the poll
        return {"latencies": latencies, "idle": idle}
    finally:
        host.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=40)
    parser.add_argument("--subscriptions", type=int, default=20, help="subscribed containers (2 per silo in fedfunc)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp, Azurite(Path(tmp) / "azurite") as az:
        results = {mode: measure(mode, az, Path(tmp), args) for mode in ("poll", "watch", "log")}
    print(f"{args.uploads} uploads of 64 KiB, {args.subscriptions} subscribed containers; "
          f"idle CPU over {args.idle:.0f} s with no events (share of one core)")
    print(f"{'mode':<8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'host idle':>12}{'azurite idle':>14}")
    for mode, r in results.items():
        lat = sorted(r["latencies"])
        q = statistics.quantiles(lat, n=100, method="inclusive")
        print(f"{mode:<8}{statistics.median(lat):>9.1f}{q[89]:>9.1f}{q[98]:>9.1f}{lat[-1]:>9.1f}"
              f"{r['idle']['host'] * 100:>11.1f}%{r['idle']['azurite'] * 100:>13.1f}%")


if __name__ == "__main__":
    main()
