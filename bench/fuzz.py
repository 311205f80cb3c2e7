"""Fuzz cases run per parser and what they found: the suite of ``tests/fuzz`` on a longer, random budget.

Every parser that takes outside input (safetensors headers and updates, silo data, run specs, silo and
job requests, policies, metrics, Event Grid routes, bundles, tickets) gets ``--examples`` hypothesis
cases; a finding is an input that raised something other than the parser's own refusal (it would be a
500, a traceback or a crashed activity). Prints, per parser: cases run, seconds, findings, and the most
common outcomes (accepted, or the refusal's rule).

    .venv/bin/python bench/fuzz.py [--examples 5000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.fuzz.targets

from tests.fuzz.targets import TARGETS, fuzz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    args = parser.parse_args()
    print(f"{'parser':28s} {'cases':>7s} {'s':>6s} {'findings':>8s}  outcomes")
    total_cases = total_findings = 0
    for target in TARGETS:
        started = time.monotonic()
        try:
            counts, found = fuzz(target, args.examples, derandomize=False), "0"
        except Exception as e:  # hypothesis re-raises the shrunk failing input
            counts, found = {}, f"1: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            total_findings += 1
        cases = sum(counts.values())
        total_cases += cases
        top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:4])
        print(f"{target.name:28s} {cases:7d} {time.monotonic() - started:6.1f} {found:>8s}  {top}")
    print(f"total: {total_cases} cases over {len(TARGETS)} parsers, {total_findings} findings")


if __name__ == "__main__":
    main()
