"""Sweep reports: one table and two comparison figures for a folder of runs.

``deeprun-report DIR [DIR ...]`` (and the Hydra callback :class:`deeprun.sweeps.callbacks.SweepSummary` at the
end of every ``deeprun -m`` sweep) reads the run folders below each DIR (the files described in the
README's "The run folder") and writes into DIR:

- ``sweep_summary.csv``  one row per job (:data:`COLUMNS`); missing values are empty cells
- ``sweep_summary.md``   the same as a GitHub Markdown table (missing values "–")
- ``sweep_learning_curves.png``  val loss (train loss dashed) and val accuracy per epoch, every job
- ``sweep_final_metrics.png``    final val accuracy and test accuracy per job

A run folder is a directory holding ``summary.json`` (a finished run) or ``.hydra/`` (a job that started;
without a summary it never finished: status ``incomplete`` when it recorded epochs, ``missing`` when not).
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deeprun.files import write_figure, write_text
from deeprun.runs.records import COLUMNS, NoRunsError, RunRecord, collect_runs

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
CURVES_PNG = "sweep_learning_curves.png"
FINAL_PNG = "sweep_final_metrics.png"


_MD_HEADERS = {
    "job": "job",
    "overrides": "overrides",
    "status": "status",
    "epochs_completed": "epochs",
    "final_train_loss": "train loss",
    "final_train_accuracy": "train acc",
    "final_val_loss": "val loss",
    "final_val_accuracy": "val acc",
    "best_epoch": "best epoch",
    "best_val_loss": "best val loss",
    "best_val_accuracy": "best val acc",
    "test_loss": "test loss",
    "test_accuracy": "test acc",
    "steady_epoch_time_s": "epoch time (s)",
    "wall_time_s": "wall time (s)",
}
_MISSING_MD = "–"


# --------------------------------------------------------------------------------------------------
# Labels and formatting
# --------------------------------------------------------------------------------------------------


def common_overrides(runs: Sequence[RunRecord]) -> list[str]:
    """The overrides every job shares (in the first job's order); none for a single job."""
    if len(runs) < 2:
        return []
    shared = set(runs[0].override_list).intersection(*(set(r.override_list) for r in runs[1:]))
    return [item for item in runs[0].override_list if item in shared]


def varying_overrides(run: RunRecord, common: Sequence[str]) -> str:
    return " ".join(item for item in run.override_list if item not in set(common))


def run_labels(runs: Sequence[RunRecord], width: int = 48) -> list[str]:
    """Short legend labels: ``<job>: <overrides that differ between jobs>``, shortened to ``width``."""
    common = common_overrides(runs)
    labels = []
    for run in runs:
        varying = varying_overrides(run, common)
        label = f"{run.job}: {varying}" if varying else run.job
        labels.append(label if len(label) <= width else label[: width - 1] + "…")
    return labels


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _md_cell(column: str, value: Any) -> str:
    if value is None or value == "":
        return _MISSING_MD
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if column.endswith("_s"):
            return f"{value:.3f}"
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(runs: Sequence[RunRecord], title: str = "Sweep summary") -> str:
    """A title line, a line naming the shared overrides, and a GitHub table, one row per job."""
    common = common_overrides(runs)
    columns = [c for c in COLUMNS if c in _MD_HEADERS]
    lines = [f"# {title}", ""]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    status_text = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines.append(f"{len(runs)} job{'s' if len(runs) != 1 else ''} ({status_text}).")
    if common:
        lines.append(f"Overrides common to every job: `{' '.join(common)}`.")
    lines.append("")
    lines.append("| " + " | ".join(_MD_HEADERS[c] for c in columns) + " |")
    lines.append("|" + "|".join("---" if c in ("overrides", "status") else "---:" for c in columns) + "|")
    for run in runs:
        cells = []
        for column in columns:
            if column == "overrides":
                value = varying_overrides(run, common) if common else run.overrides
            elif column == "status" and run.status == "diverged" and run.value("diverged_epoch") is not None:
                value = f"diverged (epoch {run.value('diverged_epoch')})"
            else:
                value = run.value(column)
            cells.append(_md_cell(column, value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(runs: Sequence[RunRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for run in runs:
        writer.writerow([_csv_cell(run.value(column)) for column in COLUMNS])
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _colors(n: int) -> list:
    import matplotlib
    import numpy as np

    if n <= 10:
        return [matplotlib.colormaps.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps.get_cmap("tab20")(i) for i in range(n)]
    return [matplotlib.colormaps.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, n)]


def _finite(values: Sequence[Any]) -> list[float]:
    """Floats, with None / NaN / inf as NaN (matplotlib leaves a gap)."""
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        out.append(number if math.isfinite(number) else math.nan)
    return out


def _robust_upper(values: list[float]) -> float | None:
    """An upper y limit that a few exploding losses (a diverging job) do not dominate."""
    import numpy as np

    data = np.asarray([v for v in values if math.isfinite(v)])
    if data.size == 0:
        return None
    top, median = float(data.max()), float(np.median(data))
    if median > 0 and top > 10 * median:
        return float(np.percentile(data, 90)) * 1.5
    return None


def _title(folder: Path, runs: Sequence[RunRecord]) -> str:
    common = common_overrides(runs)
    title = f"{folder.name}: {len(runs)} job{'s' if len(runs) != 1 else ''}"
    if common:
        title += "\n" + textwrap.shorten("common: " + " ".join(common), width=150, placeholder=" …")
    return title


def plot_sweep_learning_curves(runs: Sequence[RunRecord], path: Path, title: str = "") -> Path:
    """Two panels: validation loss (train loss dashed) and validation accuracy per epoch, every job."""
    from matplotlib.figure import Figure

    import deeprun.runs.plots  # noqa: F401  (selects the Agg backend)

    n = len(runs)
    labels = run_labels(runs)
    colors = _colors(n)
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    marker = "o" if max((len(r.metrics) for r in runs), default=0) <= 30 else None
    loss_values: list[float] = []
    plotted = 0
    for run, label, color in zip(runs, labels, colors, strict=True):
        if not run.metrics:
            continue
        plotted += 1
        epochs = [record.get("epoch", i + 1) for i, record in enumerate(run.metrics)]
        val_loss = _finite([record.get("val/loss") for record in run.metrics])
        train_loss = _finite([record.get("train/loss") for record in run.metrics])
        val_acc = _finite([record.get("val/accuracy") for record in run.metrics])
        loss_values += val_loss + train_loss
        suffix = f" [{run.status}]" if run.status not in ("completed", "stopped_early") else ""
        axes[0].plot(
            epochs, val_loss, "-", color=color, marker=marker, markersize=3, linewidth=1.5, label=label + suffix
        )
        axes[0].plot(epochs, train_loss, "--", color=color, linewidth=1, alpha=0.7)
        axes[1].plot(epochs, val_acc, "-", color=color, marker=marker, markersize=3, linewidth=1.5)
    for ax, ylabel in zip(axes, ("loss (val solid, train dashed)", "val accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.4)
        ax.xaxis.get_major_locator().set_params(integer=True)
    upper = _robust_upper(loss_values)
    if upper is not None:
        axes[0].set_ylim(top=upper)
    if plotted == 0:
        for ax in axes:
            ax.text(0.5, 0.5, "no epochs recorded", transform=ax.transAxes, ha="center", va="center")
    else:
        fontsize = 9 if plotted <= 10 else 8 if plotted <= 20 else 7
        fig.legend(
            *axes[0].get_legend_handles_labels(),
            loc="upper left",
            bbox_to_anchor=(1.0, 0.95),
            fontsize=fontsize,
            ncol=1 if plotted <= 16 else 2,
            frameon=False,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, bbox_inches="tight")


def plot_sweep_final_metrics(runs: Sequence[RunRecord], path: Path, title: str = "") -> Path:
    """Horizontal bars per job: final validation accuracy and test accuracy (values printed at the ends)."""
    import numpy as np
    from matplotlib.figure import Figure

    import deeprun.runs.plots  # noqa: F401

    n = len(runs)
    labels = run_labels(runs, width=56)
    val = _finite([run.value("final_val_accuracy") for run in runs])
    test = _finite([run.value("test_accuracy") for run in runs])
    fontsize = 8 if n <= 15 else 7
    unfinished = [run.status not in ("completed", "stopped_early") for run in runs]
    tick_labels = [
        f"{label} [{run.status}]" if flag else label for label, run, flag in zip(labels, runs, unfinished, strict=True)
    ]
    label_width = 0.075 * (fontsize + 1) / 9 * max(len(label) for label in tick_labels)  # inches
    fig = Figure(figsize=(7 + label_width, max(2.8, 0.42 * n + 1.6)))
    ax = fig.subplots()
    y = np.arange(n)
    height = 0.38
    ax.barh(y - height / 2, np.nan_to_num(val), height, label="final val accuracy", color="tab:blue")
    ax.barh(y + height / 2, np.nan_to_num(test), height, label="test accuracy", color="tab:orange")
    for i in range(n):
        for offset, value in ((-height / 2, val[i]), (height / 2, test[i])):
            if math.isfinite(value):
                ax.text(value + 0.01, i + offset, f"{value:.3f}", va="center", fontsize=fontsize)
    ax.set_yticks(y, tick_labels, fontsize=fontsize + 1)
    for tick, flag in zip(ax.get_yticklabels(), unfinished, strict=True):
        if flag:
            tick.set_color("tab:red")
    ax.set_ylim(n - 0.5, -0.5)  # first job on top
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("accuracy")
    ax.grid(True, axis="x", alpha=0.4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, bbox_inches="tight")


def write_sweep_summary(folder: Path, figures: bool = True) -> tuple[Path, Path]:
    """Write ``sweep_summary.csv``, ``sweep_summary.md`` and (``figures``) the two comparison PNGs into
    ``folder``; returns (csv path, md path). Raises :class:`NoRunsError` when there is no run below it."""
    folder = Path(folder)
    runs = collect_runs(folder)
    if not runs:
        raise NoRunsError(f"no runs in {folder} (no folder with summary.json or .hydra/)")
    csv_path = write_text(folder / SUMMARY_CSV, csv_text(runs))
    md_path = write_text(folder / SUMMARY_MD, markdown_table(runs, f"Sweep summary: {folder.name}"))
    if figures:
        title = _title(folder, runs)
        plot_sweep_learning_curves(runs, folder / CURVES_PNG, title)
        plot_sweep_final_metrics(runs, folder / FINAL_PNG, title)
    return csv_path, md_path
