"""A run's report: per-round metrics, silo outcomes, the per-silo table and each round's timeline (ISO
timestamps: where its time went) as JSON, the run's start and end, the training curves as PNG, and the run
page as a static HTML file (``fedfunc.observe.page``).

Accuracy and loss are pooled over the silos' test parts (each silo evaluates the model on its own test
part; only the counts leave); a held-out evaluator's figures (``heldout_*``) are shown beside them.
Round r's figures are those of the model round r produced.
"""
from __future__ import annotations

from fedfunc.observe.chart import curves, render
from fedfunc.observe.page import render_page
from fedfunc.observe.silos import silo_rows

_NOT_METRICS = ("round", "num_samples", "silos", "started", "ended", "clipped", "rejected", "timeline")
_STATUS = {"completed": "Completed", "failed": "Failed"}


def build_report(state: dict, *, status: str, error: str | None = None, stop_reason: str | None = None,
                 baseline: dict | None = None, final_evaluation: dict | None = None) -> dict:
    rounds = state.get("rounds", [])
    final = rounds[-1]["metrics"] if rounds else state.get("initial_metrics")
    best = max(((r["metrics"] or {}).get("accuracy", 0.0) for r in rounds), default=None)
    return {
        "run": state["run_id"], "status": status, "error": error, "stop_reason": stop_reason,
        "spec": state["spec"], "strategy": state["spec"]["strategy"], "model": state.get("model"),
        "update_bound": state.get("update_bound"),
        "rounds_completed": len(rounds),
        "initial_metrics": state.get("initial_metrics"), "final_metrics": final, "best_accuracy": best,
        "final_evaluation": final_evaluation, "baseline": baseline, "silos": silo_rows(rounds),
        "started": state.get("started"), "ended": state.get("ended"),
        "rounds": [{"round": r["round"], **(r["metrics"] or {}), "num_samples": r["num_samples"],
                    "clipped": sorted(s for s, o in r["silos"].items() if o.get("clipped")),
                    "rejected": {s: o["reason"] for s, o in sorted(r["silos"].items()) if o["state"] == "rejected"},
                    "silos": r["silos"], "started": r.get("started"), "ended": r.get("ended"),
                    "timeline": r.get("timeline")} for r in rounds],
    }


def history(report: dict) -> list[dict]:
    """The report's rounds as round results (``{"round", "metrics", "num_samples", "silos", ...}``)."""
    return [{"round": r["round"], "metrics": {k: v for k, v in r.items() if k not in _NOT_METRICS},
             "num_samples": r["num_samples"], "silos": r["silos"], "started": r.get("started"), "ended": r.get("ended")}
            for r in report["rounds"]]


def _baseline(report: dict) -> float | None:
    return (report.get("baseline") or {}).get("accuracy")


def render_png(report: dict) -> bytes:
    """Accuracy and loss of the global model per round (and each silo's training loss), with the
    centralized baseline when known."""
    title = f"{report['spec']['task']}: run {report['run']} ({report['status']})"
    return render(curves(history(report), title=title, baseline=_baseline(report)), "png")


def render_html(report: dict) -> str:
    """The run page of a finished run, as a file (no refresh)."""
    return render_page({"run": report["run"], "runtime_status": _STATUS.get(report["status"], report["status"]),
                        "phase": report["status"], "rounds": report["spec"]["rounds"], "history": history(report),
                        "error": report.get("error"), "stop_reason": report.get("stop_reason")},
                       baseline=_baseline(report))
