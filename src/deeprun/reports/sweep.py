"""Sweep reports: one table and two comparison figures for a folder of runs.

``deeprun-report DIR [DIR ...]`` (and the Hydra callback :class:`deeprun.sweeps.callbacks.SweepSummary` at the
end of every ``deeprun -m`` sweep) reads the run folders below each DIR (the files described in the
README's "The run folder") and writes into DIR:

- ``sweep_summary.csv``  one row per job: ``job``, one column per swept field, then :data:`COLUMNS`;
  missing values are empty cells
- ``sweep_summary.md``   the same as a GitHub Markdown table (missing values "–"), then, when the runs
  are grouped (:mod:`deeprun.reports.groups`: over seeds, or ``--group-by``), the grouped table: one row
  per group, mean ± std of each metric and the count
- ``sweep_groups.csv``   the grouped table with each metric's mean, std, min and max (grouped runs only)
- ``sweep_learning_curves.png``  val loss (train loss dashed) and val accuracy per epoch, every job; for
  grouped runs each group's mean curve with its min–max band
- ``sweep_final_metrics.png``    final val accuracy and test accuracy per job (per group: the mean,
  the std as an error bar)

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
from deeprun.reports.groups import GROUP_METRICS, Group, field_value, group_fields, group_rows, group_runs, swept_fields
from deeprun.runs.records import COLUMNS, NoRunsError, RunRecord, collect_runs

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
GROUPS_CSV = "sweep_groups.csv"
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


def markdown_table(runs: Sequence[RunRecord], title: str = "Sweep summary", groups: Sequence[Group] = ()) -> str:
    """A title line, a line naming the shared overrides, a GitHub table with one row per job (a column
    per swept field) and, for grouped runs, the grouped table."""
    common = common_overrides(runs)
    swept = swept_fields(runs)
    columns = [c for c in COLUMNS if c in _MD_HEADERS and c != "overrides"]
    lines = [f"# {title}", ""]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    status_text = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines.append(f"{len(runs)} job{'s' if len(runs) != 1 else ''} ({status_text}).")
    if common:
        lines.append(f"Overrides common to every job: `{' '.join(common)}`.")
    elif len(runs) == 1 and runs[0].overrides:
        lines.append(f"Overrides: `{runs[0].overrides}`.")
    lines.append("")
    headers = [_MD_HEADERS["job"], *swept, *(_MD_HEADERS[c] for c in columns[1:])]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if h in ("job", "status", *swept) else "---:" for h in headers) + "|")
    for run in runs:
        cells = [_md_cell("job", run.job), *(_md_cell(f, _field_text(field_value(run, f))) for f in swept)]
        for column in columns[1:]:
            if column == "status" and run.status == "diverged" and run.value("diverged_epoch") is not None:
                value = f"diverged (epoch {run.value('diverged_epoch')})"
            else:
                value = run.value(column)
            cells.append(_md_cell(column, value))
        lines.append("| " + " | ".join(cells) + " |")
    if groups:
        lines += ["", *grouped_markdown(groups)]
    return "\n".join(lines) + "\n"


def grouped_markdown(groups: Sequence[Group]) -> list[str]:
    """The grouped table: a group's fields, its run count and mean ± std of each metric."""
    fields = list(groups[0].key)
    metrics = [m for m in GROUP_METRICS if m != "epochs_completed"]
    over = "every field but trainer.seed" if not fields else ", ".join(fields)
    lines = [f"## Grouped by {over}: mean ± std over each group's runs", ""]
    headers = [*fields, "runs", *(_MD_HEADERS[m] for m in metrics)]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if h in fields else "---:" for h in headers) + "|")
    for _group, row in zip(groups, group_rows(groups), strict=True):
        cells = [_md_cell(f, row[f]) for f in fields] + [str(row["runs"])]
        for metric in metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            cells.append(_MISSING_MD if mean is None else f"{mean:.4f} ± {std:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _field_text(value: Any) -> Any:
    if isinstance(value, tuple):
        return "[" + ",".join(str(item) for item in value) + "]"
    return value


def csv_text(runs: Sequence[RunRecord]) -> str:
    swept = swept_fields(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", *swept, *COLUMNS[1:]])
    for run in runs:
        fields = [_csv_cell(_field_text(field_value(run, f))) for f in swept]
        writer.writerow([run.job, *fields, *(_csv_cell(run.value(column)) for column in COLUMNS[1:])])
    return buffer.getvalue()


def groups_csv_text(groups: Sequence[Group]) -> str:
    rows = group_rows(groups)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row.values()])
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


def _series(group: Group, key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs and the mean, min and max of ``key`` over the group's runs at each epoch (the runs that
    reached it; non-finite values as NaN)."""
    length = max(len(run.metrics) for run in group.runs)
    epochs, mean, low, high = [], [], [], []
    for index in range(length):
        values = [v for run in group.runs if index < len(run.metrics) for v in _finite([run.metrics[index].get(key)])]
        finite = [v for v in values if math.isfinite(v)]
        epochs.append(index + 1)
        mean.append(sum(finite) / len(finite) if finite else math.nan)
        low.append(min(finite) if finite else math.nan)
        high.append(max(finite) if finite else math.nan)
    return epochs, mean, low, high


def plot_sweep_learning_curves(
    runs: Sequence[RunRecord], path: Path, title: str = "", groups: Sequence[Group] = ()
) -> Path:
    """Two panels: validation loss (train loss dashed) and validation accuracy per epoch, every job; for
    grouped runs each group's mean curve and its min–max band."""
    from matplotlib.figure import Figure

    import deeprun.runs.plots  # noqa: F401  (selects the Agg backend)

    series = [group for group in groups if any(run.metrics for run in group.runs)] or [
        Group({}, [run]) for run in runs if run.metrics
    ]
    labels = [f"{g.label} (n={len(g.runs)})" for g in series] if groups else run_labels([g.runs[0] for g in series])
    colors = _colors(len(series))
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    marker = "o" if max((len(r.metrics) for r in runs), default=0) <= 30 else None
    loss_values: list[float] = []
    plotted = 0
    for group, label, color in zip(series, labels, colors, strict=True):
        plotted += 1
        status = group.runs[0].status
        suffix = f" [{status}]" if len(group.runs) == 1 and status not in ("completed", "stopped_early") else ""
        epochs, val_loss, low_loss, high_loss = _series(group, "val/loss")
        _, train_loss, _, _ = _series(group, "train/loss")
        _, val_acc, low_acc, high_acc = _series(group, "val/accuracy")
        loss_values += [v for v in (*val_loss, *train_loss) if math.isfinite(v)]
        axes[0].plot(
            epochs, val_loss, "-", color=color, marker=marker, markersize=3, linewidth=1.5, label=label + suffix
        )
        axes[0].plot(epochs, train_loss, "--", color=color, linewidth=1, alpha=0.7)
        axes[1].plot(epochs, val_acc, "-", color=color, marker=marker, markersize=3, linewidth=1.5)
        if len(group.runs) > 1:
            axes[0].fill_between(epochs, low_loss, high_loss, color=color, alpha=0.2, linewidth=0)
            axes[1].fill_between(epochs, low_acc, high_acc, color=color, alpha=0.2, linewidth=0)
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


def plot_sweep_final_metrics(
    runs: Sequence[RunRecord], path: Path, title: str = "", groups: Sequence[Group] = ()
) -> Path:
    """Horizontal bars per job (per group: the mean, the std as an error bar): final validation accuracy
    and test accuracy (values printed at the ends)."""
    import numpy as np
    from matplotlib.figure import Figure

    import deeprun.runs.plots  # noqa: F401

    series = list(groups) or [Group({}, [run]) for run in runs]
    n = len(series)
    labels = [f"{g.label} (n={len(g.runs)})" for g in series] if groups else run_labels(runs, width=56)
    stats = [(g.statistics("final_val_accuracy"), g.statistics("test_accuracy")) for g in series]
    val = [math.nan if v["mean"] is None else v["mean"] for v, _ in stats]
    test = [math.nan if t["mean"] is None else t["mean"] for _, t in stats]
    errors = [[v["std"] or 0.0 for v, _ in stats], [t["std"] or 0.0 for _, t in stats]] if groups else [None, None]
    fontsize = 8 if n <= 15 else 7
    unfinished = [len(g.runs) == 1 and g.runs[0].status not in ("completed", "stopped_early") for g in series]
    tick_labels = [
        f"{label} [{g.runs[0].status}]" if flag else label
        for label, g, flag in zip(labels, series, unfinished, strict=True)
    ]
    label_width = 0.075 * (fontsize + 1) / 9 * max(len(label) for label in tick_labels)  # inches
    fig = Figure(figsize=(7 + label_width, max(2.8, 0.42 * n + 1.6)))
    ax = fig.subplots()
    y = np.arange(n)
    height = 0.38
    ax.barh(y - height / 2, np.nan_to_num(val), height, xerr=errors[0], label="final val accuracy", color="tab:blue")
    ax.barh(y + height / 2, np.nan_to_num(test), height, xerr=errors[1], label="test accuracy", color="tab:orange")
    for i in range(n):
        for offset, value in ((-height / 2, val[i]), (height / 2, test[i])):
            if math.isfinite(value):
                ax.text(value + 0.01, i + offset, f"{value:.3f}", va="center", fontsize=fontsize)
    ax.set_yticks(y, tick_labels, fontsize=fontsize + 1)
    for tick, flag in zip(ax.get_yticklabels(), unfinished, strict=True):
        if flag:
            tick.set_color("tab:red")
    ax.set_ylim(n - 0.5, -0.5)  # first job on top
    ax.set_xlim(*accuracy_span(val + test, errors))
    ax.set_xlabel("accuracy")
    ax.grid(True, axis="x", alpha=0.4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, bbox_inches="tight")


def accuracy_span(values: Sequence[float], errors: Sequence[Any]) -> tuple[float, float]:
    """The accuracy axis around the values (their error bars and printed labels included), not from 0:
    0.868 against 0.878 must be told apart."""
    spread = [e for row in errors if row is not None for e in row] or [0.0]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.1
    low, high = min(finite) - max(spread), max(finite) + max(spread)
    margin = max(0.02, 0.1 * (high - low))
    return max(0.0, low - margin), min(1.1, high + margin + 0.04)  # room for the value labels


def write_sweep_summary(folder: Path, figures: bool = True, group_by: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``sweep_summary.csv``, ``sweep_summary.md``, for grouped runs ``sweep_groups.csv``, and
    (``figures``) the two comparison PNGs into ``folder``; returns (csv path, md path). ``group_by``: the
    fields to group by (None: over seeds, when the seed is swept). Raises :class:`NoRunsError` when
    there is no run below it."""
    folder = Path(folder)
    runs = collect_runs(folder)
    if not runs:
        raise NoRunsError(f"no runs in {folder} (no folder with summary.json or .hydra/)")
    fields = group_fields(runs, group_by)
    groups = group_runs(runs, fields) if fields is not None else []
    csv_path = write_text(folder / SUMMARY_CSV, csv_text(runs))
    md_path = write_text(folder / SUMMARY_MD, markdown_table(runs, f"Sweep summary: {folder.name}", groups))
    if groups:
        write_text(folder / GROUPS_CSV, groups_csv_text(groups))
    else:  # an earlier grouping's table would no longer match
        (folder / GROUPS_CSV).unlink(missing_ok=True)
    if figures:
        title = _title(folder, runs)
        plot_sweep_learning_curves(runs, folder / CURVES_PNG, title, groups)
        plot_sweep_final_metrics(runs, folder / FINAL_PNG, title, groups)
    return csv_path, md_path
