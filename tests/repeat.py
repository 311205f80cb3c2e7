"""Run the end-to-end tests several times in a row under CPU load and say how many runs passed.

A busy-loop process pinned to one core stands in for a loaded machine (on 2 cores, half of it), so a
test that races the system it tests shows up here before it shows up in someone else's run. Use it
before resolving any issue that touches the round. With ``--alone``, every test file of the suite runs
alone instead (its own pytest process, nothing before it), so a test that leans on state an earlier
file left behind shows up:

    make test-repeat            # 3 runs under the hog
    make test-alone             # each test file alone, once, no hog
    .venv/bin/python tests/repeat.py --times 5 --no-hog -- -k resilience
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

E2E = ("tests/e2e", "tests/security/test_lockdown_e2e.py")
TESTS = Path(__file__).resolve().parent


def busy_loop() -> None:
    while True:
        pass


def start_hog() -> multiprocessing.Process:
    hog = multiprocessing.Process(target=busy_loop, daemon=True)
    hog.start()
    os.sched_setaffinity(hog.pid, {min(os.sched_getaffinity(0))})  # one core, always the same one
    return hog


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=3, help="runs in a row (default 3)")
    parser.add_argument("--no-hog", action="store_true", help="without the CPU hog")
    parser.add_argument("--alone", action="store_true", help="each test file of the suite alone, not the e2e tests")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments")
    args = parser.parse_args()
    hog = None if args.no_hog else start_hog()
    load = "no extra load" if hog is None else f"a CPU hog (pid {hog.pid}) busy on one of {os.cpu_count()} cores"
    units = ([[str(f.relative_to(TESTS.parent))] for f in sorted(TESTS.rglob("test_*.py"))] if args.alone
             else [list(E2E)])
    what = f"the {len(units)} test files, each alone," if args.alone else "the end-to-end tests"
    runs = passed = 0
    try:
        for i in range(1, args.times + 1):
            for unit in units:
                start = time.monotonic()
                code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *unit,
                                        *args.pytest_args])
                runs += 1
                passed += code == 0
                print(f"run {i}/{args.times} {' '.join(unit) if args.alone else ''}: "
                      f"{'passed' if code == 0 else f'FAILED (pytest exit {code})'} "
                      f"in {time.monotonic() - start:.0f} s", flush=True)
    finally:
        if hog is not None:
            hog.terminate()
            hog.join()
    print(f"{passed}/{runs} runs of {what} passed, {args.times} time(s) in a row under {load}")
    return 0 if passed == runs else 1


if __name__ == "__main__":
    sys.exit(main())
