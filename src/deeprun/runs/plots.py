"""Figures written to run folders (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from deeprun.files import write_figure


def plot_learning_curves(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """:func:`learning_curves_plot` written to ``path``."""
    return write_figure(learning_curves_plot(history, title), path)


def learning_curves_plot(history: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Loss and accuracy per epoch, train and validation (the book's ``pd.DataFrame(history).plot()``),
    on whole-epoch ticks. An epoch whose values are not finite (a diverged run) is marked by a red line
    instead of stretching the axis to nothing."""
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        broken = []
        for split, style in (("train", "-o"), ("val", "--s")):
            values = [float(record.get(f"{split}/{metric}", math.nan)) for record in history]
            broken += [epoch for epoch, value in zip(epochs, values, strict=True) if not math.isfinite(value)]
            finite = [value if math.isfinite(value) else math.nan for value in values]
            ax.plot(epochs, finite, style, label=f"{split} {metric}", markersize=3)
        if broken:
            ax.axvline(min(broken), color="tab:red", linestyle=":", label=f"diverged (epoch {min(broken)})")
        if all(not math.isfinite(float(record.get(f"train/{metric}", math.nan))) for record in history):
            ax.set_ylim(0, 1)  # nothing finite to scale to
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_title(name: str, run_dir: Path, width: int = 110) -> str:
    """A figure title saying what was run: the run's name and the overrides it was started with
    (``.hydra/overrides.yaml``), wrapped."""
    import textwrap

    overrides_file = Path(run_dir) / ".hydra" / "overrides.yaml"
    overrides = []
    if overrides_file.is_file():
        import yaml

        overrides = [str(item).removeprefix("++") for item in yaml.safe_load(overrides_file.read_text()) or []]
    text = f"{name}: {' '.join(overrides)}" if overrides else name
    return "\n".join(textwrap.wrap(text, width)) or name


def plot_layer_stats(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Training diagnostics (``trainer.diagnostics``) against depth, one line per epoch (light to dark):
    each hidden layer's activation std on the fixed batch (the dashed line is 1, SELU's fixed point) and
    its mean gradient norm ‖∂L/∂W_l‖. Both on log scales, where a signal or gradient that shrinks or grows
    by the same factor per layer is a straight line (exact zeros are not drawn)."""
    records = [record for record in history if "diagnostics" in record]
    fig = Figure(figsize=(11, 4))
    (std_ax, grad_ax) = fig.subplots(1, 2)
    colors = matplotlib.colormaps.get_cmap("viridis_r")
    for index, record in enumerate(records):
        layers = [row["layer"] for row in record["diagnostics"]]
        color = colors(0.15 + 0.85 * index / max(len(records) - 1, 1))
        std_ax.plot(
            layers, [row["act_std"] for row in record["diagnostics"]], color=color, label=f"epoch {record['epoch']}"
        )
        grad_ax.plot(layers, [row["grad_norm"] for row in record["diagnostics"]], color=color)
    std_ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    std_ax.set_ylabel("activation std (fixed batch)")
    grad_ax.set_ylabel("gradient norm ‖∂L/∂W‖ (epoch mean)")
    for ax in (std_ax, grad_ax):
        ax.set_yscale("log")
        _span_at_least(ax, decades=2)
        ax.set_xlabel("hidden layer (1 = input side)")
        ax.grid(True, which="both", alpha=0.3)
    std_ax.legend(fontsize="small", ncol=1 + len(records) // 8)
    return _save(fig, path, title)


def _save(fig, path: Path, title: str) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return write_figure(fig, path)


def _span_at_least(ax, decades: float) -> None:
    """Widen a log axis to ``decades`` (keeping its geometric centre): a nearly flat profile is drawn
    flat instead of zoomed in until its wiggles fill the panel."""
    low, high = ax.get_ylim()
    missing = decades - math.log10(high / low)
    if missing > 0:
        pad = 10 ** (missing / 2)
        ax.set_ylim(low / pad, high * pad)
