"""A run seen from outside: by an Event Grid subscriber, in MLflow (read back with MLflow's own client), per
silo through the API and the CLI, and on its page, rendered by a real headless Chromium through a signed link."""
from __future__ import annotations

import shutil
import subprocess
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pytest
import requests
from e2e_helpers import SILOS
from matplotlib import image

from fedfunc import layout, weights
from fedfunc.host.testing import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


RUN = "e2e-basic"


@pytest.fixture(scope="module")
def observed(basic_run):
    assert basic_run["runtime_status"] == "Completed", basic_run
    return basic_run


def test_a_subscriber_hears_each_fact_once_with_its_figures(subscriber, observed):
    run = RUN
    expected = {f"run:{run}:RunStarted", f"run:{run}:RoundCompleted:0", f"run:{run}:RoundCompleted:1",
                f"run:{run}:RunCompleted"}
    facts = wait_until(lambda: (f := subscriber.facts(f"runs/{run}")) and set(f) >= expected and f,
                       timeout=60, what="the run's events delivered")
    assert set(facts) == expected
    for r in observed["history"]:
        event = facts[f"run:{run}:RoundCompleted:{r['round']}"]
        assert event["type"] == "fedfunc.RoundCompleted" and event["source"] == "/fedfunc"
        assert event["subject"] == f"runs/{run}/rounds/{r['round']}"
        assert event["data"]["metrics"] == r["metrics"] and event["data"]["model"] == r["model"]
        assert {s: o["state"] for s, o in event["data"]["silos"].items()} == {s: "received" for s in SILOS}
    done = facts[f"run:{run}:RunCompleted"]["data"]
    assert done["rounds_completed"] == 2 and done["report"]["html"] == f"runs/{run}/report.html"


def test_the_run_is_in_mlflow_with_rounds_silos_and_the_final_model(stack, observed):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.mlflow_uri)
    experiment = client.get_experiment_by_name("fedfunc").experiment_id

    def finished():
        runs = client.search_runs([experiment], filter_string=f"tags.`fedfunc.run` = '{RUN}'")
        return runs if runs and runs[0].info.status == "FINISHED" else None

    (run,) = wait_until(finished, timeout=60, what="the MLflow run to be FINISHED")
    rid = run.info.run_id
    assert run.data.params["task"] == "digits" and run.data.params["rounds"] == "2"
    assert run.data.tags["fedfunc.strategy"] == "fedavg"
    history = observed["history"]
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "accuracy")] == \
        [(r["round"], pytest.approx(r["metrics"]["accuracy"])) for r in history]
    for silo in SILOS:
        losses = client.get_metric_history(rid, f"silo/{silo}/loss")
        assert [(m.step, m.value) for m in losses] == \
            [(r["round"], pytest.approx(r["silos"][silo]["metrics"]["loss"])) for r in history]
        assert [m.value for m in client.get_metric_history(rid, f"silo/{silo}/num_samples")] == \
            [r["silos"][silo]["num_samples"] for r in history]
        assert run.data.tags[f"silo.{silo}.state"] == "received"
    model = open(client.download_artifacts(rid, "model/global.safetensors"), "rb").read()
    final = observed["output"]["model"]
    assert weights.sha256(model) == final["sha256"] == weights.sha256(stack.download(layout.MODELS, final["path"]))
    report = {a.path for a in client.list_artifacts(rid, "report")}
    assert report == {"report/report.json", "report/report.png", "report/report.html"}


def test_api_and_cli_show_each_silo(stack, observed):
    rows = {r["silo"]: r for r in observed["silos"]}
    assert set(rows) == set(SILOS)
    last = observed["history"][-1]["silos"]
    for silo, row in rows.items():
        assert row["state"] == "received" and row["round"] == 1 and row["accepted_rounds"] == 2
        assert row["num_samples"] == last[silo]["num_samples"] and row["loss"] == last[silo]["metrics"]["loss"]
        assert 0 < row["seconds"] == last[silo]["seconds"]
    from typer.testing import CliRunner

    from fedfunc.cli import _register, app

    _register()
    out = CliRunner().invoke(app, ["run", "status", RUN, "--host", stack.host.origin,
                                   "--api-key", stack.scientist_key], terminal_width=200)
    assert out.exit_code == 0, out.output
    for silo, row in rows.items():
        line = next(x for x in out.output.splitlines() if x.strip().startswith(f"│ {silo}"))
        assert "received" in line and str(row["num_samples"]) in line and f"{row['loss']:.4f}" in line
    opened = CliRunner().invoke(app, ["run", "open", RUN, "--ttl", "120", "--host", stack.host.origin,
                                      "--api-key", stack.scientist_key], terminal_width=400)
    assert opened.exit_code == 0, opened.output
    link = next(x for x in opened.output.split() if x.startswith("http"))
    assert requests.get(link, timeout=30).status_code == 200


def test_the_page_answers_only_its_roles_and_links(stack, observed):
    page = stack.host.url(f"/api/runs/{RUN}/report")
    link = stack.run_page_link(RUN, ttl_s=60)
    assert requests.get(link, timeout=30).status_code == 200
    assert requests.get(page, headers={"x-api-key": stack.admin_key}, timeout=30).status_code == 200
    anonymous = requests.get(page, timeout=30)
    assert anonymous.status_code == 401 and "fedfunc run open" in anonymous.text
    query = parse_qs(urlsplit(link).query)
    other = requests.get(stack.host.url("/api/runs/e2e-other/report?") + urlencode(
        {k: v[0] for k, v in query.items()}), timeout=30)
    assert other.status_code == 403 and "does not open run e2e-other" in other.text
    stretched = requests.get(page + "?" + urlencode({"exp": int(query["exp"][0]) + 3600, "sig": query["sig"][0]}),
                             timeout=30)
    assert stretched.status_code == 403
    bad_ttl = stack.api("POST", f"/api/runs/{RUN}/link", {"ttl_s": 0}, expect=(400,))
    assert "ttl_s" in bad_ttl["error"]


@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: install Debian's `chromium` (apt-get install -y "
                                              "chromium) to check that the run page renders")
def test_the_page_renders_in_headless_chromium(stack, observed, tmp_path):
    link = stack.run_page_link(RUN)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1280,2400"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", link], capture_output=True, text=True, timeout=120).stdout
    assert 'id="status">Completed<' in dom
    assert '<div id="curves"' in dom and "<svg" in dom and "<path" in dom
    for silo in SILOS:
        assert f'data-silo="{silo}"' in dom
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", link], capture_output=True, timeout=120)
    pixels = image.imread(shot)[..., :3]
    blue = np.all(np.abs(pixels - np.array([31, 119, 180]) / 255) < 0.03, axis=-1)   # the accuracy curve
    assert pixels.shape[:2] == (2400, 1280) and blue.sum() > 200, "the curve was drawn"
