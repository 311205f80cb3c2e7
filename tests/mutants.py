"""Break the product on purpose, one way at a time, and check that the tests written for that behaviour fail.

Each mutant is one edit of the product's source (the exact text it replaces must occur once, so a mutant
cannot go stale silently). The edit is made in a copy of the working tree, never in the tree itself, and
the copy's tests run against the copy's code (``PYTHONPATH`` and the copy's ``pytest.ini_options``), with
this checkout's ``.venv`` and ``node_modules``. A control run of the same tests on the unedited copy comes
first: a mutant counts as caught only if those tests pass unedited and fail (pytest exit 1) edited.

    .venv/bin/python tests/mutants.py                 # every mutant
    .venv/bin/python tests/mutants.py deadline        # those whose name contains "deadline"
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (exact text, replacement), each text occurring once in ``path``
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("deadline timer removed: the round waits for its silos with no deadline",
           "orchestrations/round.py",
           (("winner = yield context.task_any([*waits, timer])", "winner = yield context.task_any([*waits])"),),
           ("tests/orchestrations/test_round_orchestration.py",
            "tests/e2e/test_round_branches.py::test_a_silo_that_stays_silent_is_failed_at_the_deadline")),
    Mutant("size bound skipped: the outbox reader reads a whole blob, however large",
           "fedfunc/coordinator/services.py",
           (("download_blob(offset=0, length=max_bytes + 1)", "download_blob()"),
            ("if len(data) > max_bytes:", "if False:")),
           ("tests/coordinator/test_aggregate_round.py",)),
    Mutant("size bound skipped: an update is parsed before its size is checked",
           "fedfunc/weights.py",
           (("if size > limit:", "if False:"),),
           ("tests/domain/test_weights.py",)),
    Mutant("event de-duplication broken: the watcher sends BlobCreated for every blob it lists again",
           "fedfunc/host/eventgrid.py",
           (("if seen.get(blob.name) == blob.etag:\n                    continue\n", ""),),
           ("tests/host/test_host_triggers.py::test_subscription_turns_new_blobs_into_blob_created_events",)),
    Mutant("outbox SAS not revocable: every claim of a pooled account shares one policy id",
           "fedfunc/silo/local.py",
           (("outbox.set_container_access_policy({grant: AccessPolicy(",
             'grant = "outbox-read"\n    outbox.set_container_access_policy({grant: AccessPolicy('),),
           ("tests/silo/test_provision.py::"
            "test_a_released_silos_sas_cannot_read_the_next_silo_provisioned_on_its_account",)),
)


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored), with this checkout's installs."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for installed in (".venv", "node_modules"):
        (dest / installed).symlink_to(ROOT / installed)


def apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.path
    text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutant {mutant.name!r} is stale: {old!r} occurs {text.count(old)} times "
                             f"in {mutant.path}, not once")
        text = text.replace(old, new)
    path.write_text(text)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    imported = subprocess.run([sys.executable, "-c", "import fedfunc; print(fedfunc.__file__)"], cwd=tree, env=env,
                              check=True, capture_output=True, text=True).stdout.strip()
    if not imported.startswith(str(tree)):
        raise SystemExit(f"the copy would test {imported}, not its own code")
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return code, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run the mutants whose name contains one of these")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
    caught = 0
    for mutant in chosen:
        with tempfile.TemporaryDirectory(prefix="fedfunc-mutant-") as tmp:
            tree = Path(tmp)
            copy_tree(tree)
            control, _ = run_tests(tree, mutant.tests)
            if control != 0:
                print(f"CONTROL FAILED  {mutant.name}: the tests fail unedited (pytest exit {control})", flush=True)
                continue
            apply(tree, mutant)
            code, seconds = run_tests(tree, mutant.tests)
        verdict = "caught" if code == 1 else f"NOT CAUGHT (pytest exit {code})"
        caught += code == 1
        print(f"{verdict:<14}  {mutant.name}  [{mutant.path}; {' '.join(mutant.tests)}; {seconds:.0f} s]",
              flush=True)
    print(f"{caught}/{len(chosen)} mutants caught by their tests")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
