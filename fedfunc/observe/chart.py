"""The training curves of a run: the global model's held-out accuracy and loss per round, each silo's own
training loss beside them, the centralized baseline when known. PNG for the report, inline SVG for the page."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def curves(history: list[dict], *, title: str, baseline: float | None = None):
    """A figure from round results (``{"round", "metrics", "silos"}``); rounds count from 1 on the axis."""
    xs = [r["round"] + 1 for r in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(xs, [r["metrics"].get("accuracy") for r in history], marker="o", label="federated (global model)")
    ax_loss.plot(xs, [r["metrics"].get("loss") for r in history], marker="o", color="tab:red", label="global, held-out")
    silos = sorted({s for r in history for s in r.get("silos", {})})
    for silo in silos:
        points = [(r["round"] + 1, ((r["silos"].get(silo) or {}).get("metrics") or {}).get("loss")) for r in history]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax_loss.plot(*zip(*points), ls="--", lw=1, alpha=0.7, label=f"{silo} (training)")
    if baseline is not None:
        ax_acc.axhline(baseline, ls="--", color="gray", label="centralized baseline")
    ax_acc.set(title="held-out accuracy", xlabel="round", ylabel="accuracy")
    ax_loss.set(title="loss", xlabel="round", ylabel="cross-entropy")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def render(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none"}):   # SVG text stays text (smaller, searchable)
        fig.savefig(buf, format=fmt, dpi=100)
    plt.close(fig)
    return buf.getvalue()


def inline_svg(history: list[dict], *, title: str, baseline: float | None = None) -> str:
    """The ``<svg>`` element alone, to place in an HTML page."""
    svg = render(curves(history, title=title, baseline=baseline), "svg").decode()
    return svg[svg.index("<svg"):]
