"""Learning curves from a run's JSONL log, drawn to PNG (as in the paper's Fig. 9)."""

from __future__ import annotations

import json
from pathlib import Path

# the headline metric of each task kind, in the order looked for: mIoU (segmentation), absolute
# error (depth), mean angle (normal), odsF (edge)
HEADLINE = ("mIoU", "abs_err", "mean", "odsF")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def headline(metrics: dict) -> tuple[str, float] | None:
    """The metric shown for a task: its kind's headline, else the first number."""
    for name in HEADLINE:
        if isinstance(metrics.get(name), (int, float)):
            return name, float(metrics[name])
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return k, float(v)
    return None


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Losses per epoch in the first panel, one validation metric per task in the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return
    tasks = sorted({t for r in rows for t in r.get("val", {})})
    fig, axes = plt.subplots(
        1, 1 + len(tasks), figsize=(3.2 * (1 + len(tasks)), 2.8), squeeze=False
    )
    ax = axes[0, 0]
    epochs = [r["epoch"] for r in rows]
    for key in ("loss", "loss_s", "loss_p", "loss_f"):
        if any(key in r for r in rows):
            ax.plot(epochs, [r.get(key, float("nan")) for r in rows], label=key)
    ax.set_title("training loss")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    for ax, task in zip(axes[0, 1:], tasks, strict=False):
        points = [(r["epoch"], headline(r["val"][task])) for r in rows if task in r.get("val", {})]
        points = [(e, h) for e, h in points if h is not None]
        if points:
            ax.plot([e for e, _ in points], [h[1] for _, h in points], marker=".")
            ax.set_title(f"val {task}: {points[-1][1][0]}")
        ax.set_xlabel("epoch")
    fig.tight_layout()
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(png_path)
