"""The loss-curve PNG logged with every run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curve(history: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train/loss", "val/loss"):
        if history.get(key):
            steps, values = zip(*history[key], strict=True)
            ax_loss.plot(steps, values, label=key, marker="o" if key.startswith("val") else None)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    if history.get("val/ppl"):
        steps, values = zip(*history["val/ppl"], strict=True)
        ax_ppl.plot(steps, values, marker="o", color="tab:orange")
        ax_ppl.set_yscale("log")
    ax_ppl.set_xlabel("step")
    ax_ppl.set_ylabel("validation perplexity")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
