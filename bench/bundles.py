"""What bringing your own task costs: signing a bundle and shipping it to the orchestrator, the time a silo
job adds to download and verify it and import the task from it, and ``fedfunc task try`` on a freshly
scaffolded task.

- sign: ``fedfunc.tasks.signing.build_bundle`` in-process (load the folder's task from its bytes, build the
  initial weights, hash, sign, pack) — for the scaffolded task, the built-in digits task and both examples;
- ship: ``POST /api/bundles`` to a running system (Azurite + the Function App on ``fedfunc host``), which
  checks the bundle and stores it once;
- job start: what a silo job does with it before it reads any data — download it from the orchestrator's
  ``bundles`` with the silo's read-only SAS, verify signature and every file, check the requirements against
  the installed distributions, import the task from the verified bytes — median of N, against Azurite;
- ``fedfunc task try``: wall time of the command in a fresh process (Python, torch and the task imports
  included) for the scaffolded task over its 3 sample silos, default 3 rounds.

Run: .venv/bin/python bench/bundles.py  (≈1 min; Azurite from `make install`)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def job_start_seconds(bundle: bytes, key, n: int) -> dict[str, float]:
    """The silo's steps with a bundle before reading data, against a real silo account on Azurite."""
    from azure.storage.blob import BlobServiceClient

    from fedfunc import layout
    from fedfunc.azurite import Azurite
    from fedfunc.security import keys
    from fedfunc.security.bundle import MAX_BUNDLE_BYTES, open_bundle, verify_bundle
    from fedfunc.security.policy import SiloPolicy
    from fedfunc.security.requirements import check_requirements
    from fedfunc.silo.home import read_credentials, silo_home
    from fedfunc.silo.io import BlobSiloIO
    from fedfunc.silo.local import provision_local_silo

    code_hash = open_bundle(bundle).code_hash
    trusted = [keys.public_b64(key.public_key())]
    with tempfile.TemporaryDirectory() as tmp, Azurite(Path(tmp) / "azurite") as az:
        policy = SiloPolicy(silo="alpha", orchestrator_keys=trusted, trusted_signers=trusted, allowed_tasks=["x"])
        provision_local_silo("alpha", azurite_home=az.location, orchestrator_conn=az.orchestrator.connection_string,
                             home_root=Path(tmp) / "home", initial_policy=policy)
        orchestrator = BlobServiceClient.from_connection_string(az.orchestrator.connection_string)
        orchestrator.create_container(layout.BUNDLES)
        orchestrator.get_blob_client(layout.BUNDLES, layout.bundle(code_hash)).upload_blob(bundle)
        io = BlobSiloIO.of(read_credentials(silo_home(Path(tmp) / "home", "alpha")))
        download = median_s(lambda: io.read_bundle(code_hash, MAX_BUNDLE_BYTES), n)
        verify = median_s(lambda: verify_bundle(bundle, trusted, expected_hash=code_hash), n)
        verified = verify_bundle(bundle, trusted, expected_hash=code_hash)
        requirements = median_s(lambda: check_requirements(verified.manifest.requirements), n)
    return {"download": download, "verify": verify, "requirements": requirements}


def first_import_seconds(bundle: bytes) -> float:
    """A fresh process verifying the bundle and importing its task for the first time (torch already loaded)."""
    code = ("import sys, time, torch; from fedfunc.security.bundle import open_bundle; "
            "from fedfunc.tasks.loader import from_bundle; data = open(sys.argv[1], 'rb').read(); "
            "t = time.perf_counter(); from_bundle(open_bundle(data).verify(None)); print(time.perf_counter() - t)")
    with tempfile.NamedTemporaryFile(suffix=".fedbundle") as f:
        f.write(bundle)
        f.flush()
        out = subprocess.run([sys.executable, "-c", code, f.name], capture_output=True, text=True, check=True,
                             cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()

    from fedfunc.devstack import DevStack
    from fedfunc.security import keys
    from fedfunc.tasks.builtin import task_dir
    from fedfunc.tasks.scaffold import new_task
    from fedfunc.tasks.signing import build_bundle

    key = keys.generate()
    with tempfile.TemporaryDirectory() as tmp:
        scaffold = Path(tmp) / "scratch"
        new_task(scaffold, "scratch")
        folders = {"scaffolded (fedfunc task new)": scaffold, "built-in digits": task_dir("digits"),
                   "examples/tabular": REPO / "examples/tabular/task", "examples/images": REPO / "examples/images/task"}
        bundles = {name: build_bundle(folder, key) for name, folder in folders.items()}  # warm: torch, sklearn
        print("sign (in-process, median of 5) and ship (POST /api/bundles to a running system, median of 5):")
        with DevStack(Path(tmp) / "stack") as stack:
            for name, folder in folders.items():
                sign = median_s(lambda: build_bundle(folder, key), 5)
                ship = median_s(lambda: requests.post(stack.host.url("/api/bundles"), data=bundles[name], timeout=60,
                                                      headers={"x-api-key": stack.scientist_key}).raise_for_status(), 5)
                print(f"  {name:<32} {len(bundles[name]):>8} bytes  sign {sign * 1e3:7.1f} ms  ship {ship * 1e3:6.1f} ms")
        print(f"added silo job start, before any data is read (median of {args.repeat}):")
        for name in ("built-in digits", "examples/images"):
            steps = job_start_seconds(bundles[name], key, args.repeat)
            first = first_import_seconds(bundles[name])
            total = steps["download"] + steps["verify"] + steps["requirements"] + first
            print(f"  {name:<32} download {steps['download'] * 1e3:.1f} ms, verify {steps['verify'] * 1e3:.1f} ms, "
                  f"requirements {steps['requirements'] * 1e3:.1f} ms, first import of the task {first * 1e3:.1f} ms "
                  f"→ {total * 1e3:.1f} ms")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedfunc", "task", "try", str(scaffold)], cwd=REPO, check=True,
                       capture_output=True)
        print(f"`fedfunc task try` on the scaffolded task (3 sample silos, 3 rounds, fresh process): "
              f"{time.perf_counter() - t:.1f} s wall")


if __name__ == "__main__":
    main()
