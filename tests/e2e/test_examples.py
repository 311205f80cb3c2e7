"""The two examples in examples/, run the way examples/README.md says, against the running system: each silo
owner makes and uploads their data, the scientist signs and uploads the task and starts the run, all with
the `fedfunc` command. The tabular task (CSV tables) reaches ≥ 0.90 pooled test accuracy, the image task
(folders of PNG files, a small CNN) ≥ 0.95."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SILOS = ("site-1", "site-2", "site-3")


@pytest.mark.parametrize("example, rounds, target", [("tabular", 4, 0.90), ("images", 4, 0.95)])
def test_example_runs_from_the_readme(stack, fedfunc, tmp_path, example, rounds, target):
    env = {"FEDFUNC_HOST": stack.host.origin, "FEDFUNC_API_KEY": stack.scientist_key,
           "FEDFUNC_LOCAL_HOME": str(stack.home)}
    readme = (REPO / "examples" / "README.md").read_text()
    assert f"python examples/{example}/make_data.py" in readme and f"--task-dir examples/{example}/task" in readme

    data = tmp_path / example
    subprocess.run([sys.executable, f"examples/{example}/make_data.py", str(data)], cwd=REPO, check=True,
                   capture_output=True)
    for silo in SILOS:  # each silo owner, with the silo's own key
        r = fedfunc("silo", "upload", silo, "--task", example, "--train", data / silo / "train",
                    "--test", data / silo / "test", env=env)
        assert r.exit_code == 0, r.output

    bundle_file = tmp_path / f"{example}.fedbundle"
    r = fedfunc("sign", "--task-dir", REPO / "examples" / example / "task",
                "--key", stack.root / "keys" / "scientist.pem", "--out", bundle_file)
    assert r.exit_code == 0, r.output
    r = fedfunc("bundle", "upload", bundle_file, env=env)
    assert r.exit_code == 0, r.output
    code_hash = re.search(r"bundle ([0-9a-f]{64})", r.output.replace("\n", "")).group(1)

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"bundle": code_hash, "silos": list(SILOS), "rounds": rounds,
                                "run_id": f"e2e-example-{example}"}))
    r = fedfunc("run", "start", spec, env=env)
    assert r.exit_code == 0, r.output
    status = stack.wait_run(f"e2e-example-{example}", timeout=600)
    assert status["runtime_status"] == "Completed", status
    assert status["output"]["metrics"]["accuracy"] >= target, status["output"]["metrics"]
    shown = fedfunc("run", "status", f"e2e-example-{example}", env=env)
    assert shown.exit_code == 0 and "Completed" in shown.output
