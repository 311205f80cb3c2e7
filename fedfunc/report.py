"""A run's report: per-round metrics and silo outcomes as JSON, and the training curve as PNG.

Accuracy and loss are pooled over the silos' test parts (each silo evaluates the model on its own test
part; only the counts leave); a held-out evaluator's figures (``heldout_*``) are shown beside them.
Round r's figures are those of the model round r produced.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402


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
        "final_evaluation": final_evaluation, "baseline": baseline,
        "rounds": [{"round": r["round"], **(r["metrics"] or {}), "num_samples": r["num_samples"],
                    "clipped": sorted(s for s, o in r["silos"].items() if o.get("clipped")),
                    "rejected": {s: o["reason"] for s, o in sorted(r["silos"].items()) if o["state"] == "rejected"},
                    "silos": r["silos"]} for r in rounds],
    }


def render_png(report: dict) -> bytes:
    """Accuracy and loss of the global model per round, with the centralized baseline when known."""
    rounds = report["rounds"]
    xs = [r["round"] + 1 for r in rounds]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(xs, [r.get("accuracy") for r in rounds], marker="o", label="pooled over silos' test parts")
    ax_loss.plot(xs, [r.get("loss") for r in rounds], marker="o", color="tab:red", label="pooled test")
    if any("heldout_accuracy" in r for r in rounds):
        ax_acc.plot(xs, [r.get("heldout_accuracy") for r in rounds], marker="s", ls=":", label="held-out evaluator")
        ax_loss.plot(xs, [r.get("heldout_loss") for r in rounds], marker="s", ls=":", color="tab:orange",
                     label="held-out")
    if report.get("baseline"):
        ax_acc.axhline(report["baseline"]["accuracy"], ls="--", color="gray", label="centralized baseline")
    ax_acc.set(title=f"{report['spec']['task']}: test accuracy", xlabel="round", ylabel="accuracy")
    ax_loss.set(title="test loss", xlabel="round", ylabel="cross-entropy")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"run {report['run']} ({report['status']}), strategy {report['strategy']['name']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
