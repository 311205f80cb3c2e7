"""A run's report: per-round metrics, silo outcomes and timelines (ISO timestamps: where each round's time
went) as JSON, the run's start and end, and the training curve as PNG."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def build_report(state: dict, *, status: str, error: str | None = None, stop_reason: str | None = None,
                 baseline: dict | None = None) -> dict:
    rounds = state.get("rounds", [])
    final = rounds[-1]["metrics"] if rounds else None
    best = max((r["metrics"].get("accuracy", 0.0) for r in rounds), default=None)
    return {
        "run": state["run_id"], "status": status, "error": error, "stop_reason": stop_reason,
        "spec": state["spec"], "model": state.get("model"), "update_bound": state.get("update_bound"),
        "rounds_completed": len(rounds),
        "final_metrics": final, "best_accuracy": best, "baseline": baseline,
        "started": state.get("started"), "ended": state.get("ended"),
        "rounds": [{"round": r["round"], **r["metrics"], "num_samples": r["num_samples"], "silos": r["silos"],
                    "timeline": r.get("timeline")} for r in rounds],
    }


def render_png(report: dict) -> bytes:
    """Accuracy and loss of the global model per round, with the centralized baseline when known."""
    rounds = report["rounds"]
    xs = [r["round"] + 1 for r in rounds]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(xs, [r.get("accuracy") for r in rounds], marker="o", label="federated (global model)")
    ax_loss.plot(xs, [r.get("loss") for r in rounds], marker="o", color="tab:red", label="federated")
    if report.get("baseline"):
        ax_acc.axhline(report["baseline"]["accuracy"], ls="--", color="gray", label="centralized baseline")
    ax_acc.set(title=f"{report['spec']['task']}: held-out accuracy", xlabel="round", ylabel="accuracy")
    ax_loss.set(title="held-out loss", xlabel="round", ylabel="cross-entropy")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"run {report['run']} ({report['status']})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
