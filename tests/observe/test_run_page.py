"""The run page and what feeds it: the per-silo rows, signed links, and silo-written text shown as text
(in HTML and in the terminal), never as markup."""
from __future__ import annotations

from datetime import timedelta

import pytest
from observe_facts import T0, round_result
from rich.console import Console

from fedfunc.observe import links
from fedfunc.observe.page import render_page
from fedfunc.observe.silos import silo_rows
from fedfunc.run_cli import status_view

EVIL = "<script>alert(1)</script> [red]not markup[/red] & more"


def history(rounds=2):
    return [round_result(r).model_dump(mode="json") for r in range(rounds)]


def running_view(**extra):
    current = {"round": 2, "phase": "collecting", "started": (T0 + timedelta(seconds=30)).isoformat(),
               "silos": {"site-1": {"state": "waiting"}, "site-2": {"state": "failed", "reason": EVIL, "seconds": 2.0}}}
    return {"run": "run-a", "runtime_status": "Running", "phase": "training", "round": 2, "rounds": 4,
            "history": history(), "current_round": current, **extra}


def test_silo_rows_show_the_round_in_progress_and_the_last_reported_figures():
    rows = {r["silo"]: r for r in silo_rows(history(), running_view()["current_round"], T0 + timedelta(seconds=42))}
    assert rows["site-1"] == {"silo": "site-1", "round": 2, "state": "waiting", "reason": None, "seconds": 12.0,
                              "num_samples": 100, "loss": 0.25, "test": {"test_accuracy": 0.81}, "accepted_rounds": 2}
    assert rows["site-2"]["state"] == "failed" and rows["site-2"]["reason"] == EVIL
    assert rows["site-2"]["num_samples"] is None and rows["site-2"]["accepted_rounds"] == 0


def test_page_shows_curves_silos_and_timeline_and_escapes_silo_text():
    html = render_page(running_view(), now=T0 + timedelta(seconds=42))
    assert '<meta http-equiv="refresh" content="5">' in html
    assert "<svg" in html and 'id="curves"' in html
    assert 'data-silo="site-1"' in html and "test_accuracy" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'id="timeline"' in html and "site-1 (5.5 s)" in html   # the slowest silo of round 2
    assert 'id="privacy"' not in html


def test_finished_page_does_not_refresh_and_shows_privacy_figures_when_present():
    rounds = history()
    for i, r in enumerate(rounds):
        r["metrics"]["epsilon"] = 0.5 * (i + 1)
    html = render_page({"run": "run-a", "runtime_status": "Completed", "rounds": 2, "history": rounds})
    assert "http-equiv" not in html
    assert 'id="privacy"' in html and "<th>epsilon</th>" in html and ">1<" in html


def test_page_of_a_run_without_rounds():
    html = render_page({"run": "run-a", "runtime_status": "Pending", "rounds": 3, "history": []})
    assert "No round has completed yet." in html and "<svg" not in html


def test_cli_prints_silo_text_as_text():
    console = Console(record=True, width=200)
    console.print(status_view({**running_view(), "error": "[bold]boom[/bold]",
                               "silos": silo_rows(history(), running_view()["current_round"])}))
    out = console.export_text()
    assert "[red]not markup[/red]" in out and "[bold]boom[/bold]" in out
    assert "site-1" in out and "waiting" in out and "0.2500" in out


KEY = "k" * 32


def test_a_signed_link_opens_its_run_until_it_expires():
    q = links.sign(KEY, "run-a", ttl_s=60, now=1000)
    links.verify(KEY, "run-a", q["exp"], q["sig"], now=1059)
    with pytest.raises(links.LinkRefused, match="expired"):
        links.verify(KEY, "run-a", q["exp"], q["sig"], now=1061)
    with pytest.raises(links.LinkRefused, match="does not match run 'run-b'"):
        links.verify(KEY, "run-b", q["exp"], q["sig"], now=1000)
    with pytest.raises(links.LinkRefused, match="does not match"):   # a later expiry is not signed
        links.verify(KEY, "run-a", str(int(q["exp"]) + 3600), q["sig"], now=1000)
    with pytest.raises(links.LinkRefused, match="does not match"):
        links.verify("x" * 32, "run-a", q["exp"], q["sig"], now=1000)
    with pytest.raises(links.LinkRefused, match="missing"):
        links.verify(KEY, "run-a", None, q["sig"])
    with pytest.raises(ValueError, match="ttl_s"):
        links.sign(KEY, "run-a", ttl_s=0)
