"""Figures written to run folders (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and validation (the book's ``pd.DataFrame(history).plot()``)."""
    epochs = [record["epoch"] for record in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, style in (("train", "-o"), ("val", "--s")):
            ax.plot(epochs, [record[f"{split}/{metric}"] for record in history], style, label=f"{split} {metric}",
                    markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
