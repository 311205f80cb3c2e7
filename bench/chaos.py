"""Chaos figures: transient storage faults injected vs runs completed, on the real system.

Each run is ``tests/chaos/test_chaos.py``'s: every storage request of the app, the host and the silos goes
through a fault proxy (503 ServerBusy, 500 OperationTimedOut, dropped connections before or after storage
applied the request, slow answers) at ``--rate`` with at most ``--budget`` faults; with ``--kill``, a silo
worker is SIGKILLed in round 0 (its update upload held at the proxy) and Azurite is stopped and restarted
while round 0 collects. A run counts as completed when it finished and nothing was lost or doubled (every
update that left a silo accepted once with its hash; one audit entry per ticket and receipt).

    .venv/bin/python bench/chaos.py [--runs 3] [--rounds 2] [--rate 0.1] [--budget 40] [--kill]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.chaos

from tests.chaos.test_chaos import chaos_run  # noqa: E402

FAULTS = ("busy", "timeout", "drop_before", "drop_after", "slow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--kill", action="store_true")
    args = parser.parse_args()
    completed, injected = 0, Counter()
    for i in range(args.runs):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="fedfunc-chaos-") as root:
            try:
                result = chaos_run(Path(root), rounds=args.rounds, rate=args.rate, budget=args.budget, seed=i,
                                   kill=args.kill)
                completed += 1
                faults, verdict = result["faults"], f"completed, outcomes {dict(result['outcomes'])}"
            except Exception as e:
                faults, verdict = Counter(), f"NOT completed: {type(e).__name__}: {str(e)[:200]}"
        injected += faults
        print(f"run {i}: {sum(faults[f] for f in FAULTS)} faults {dict((f, faults[f]) for f in FAULTS)} over "
              f"{faults['requests']} requests; {verdict} ({time.monotonic() - started:.0f} s)")
    print(f"faults injected: {sum(injected[f] for f in FAULTS)} ({', '.join(f'{f} {injected[f]}' for f in FAULTS)}); "
          f"runs completed with nothing lost or doubled: {completed}/{args.runs}")


if __name__ == "__main__":
    main()
