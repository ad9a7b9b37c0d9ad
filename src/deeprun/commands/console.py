"""Rich console output: a progress bar over epochs, one line per epoch, a results table at the end, a
download's progress bar."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

console = Console(stderr=False, highlight=False)


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {record['epoch']:>3}/{epochs}  "
        f"loss {record['train/loss']:.4f}  acc {record['train/accuracy']:.4f}  "
        f"val_loss {record['val/loss']:.4f}  val_acc {record['val/accuracy']:.4f}  "
        f"lr {record['lr']:.3g}  {record['epoch_time_s']:.2f}s"
    )


class EpochProgress:
    """Context manager and epoch callback: advances the bar and prints the epoch's metrics."""

    def __init__(self, epochs: int, description: str, bar: bool = True, label: str = ""):
        """``label``: the run's name on the lines it prints (a sweep's job: ``default #3``)."""
        self.epochs = epochs
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not bar,
        )
        self.task = self.progress.add_task(description, total=epochs)
        self.steps_task: Any = None

    def steps_done(self, steps_per_epoch: int) -> Callable[[int], None]:
        """Progress within the epoch (``steps_per_epoch``: every fused run's steps): a second bar, advanced
        from the epoch program's host callback (``fit_many(steps_done=...)``), emptied at each epoch's end."""
        self.steps_task = self.progress.add_task("  steps of this epoch", total=steps_per_epoch)
        return lambda count: self.progress.advance(self.steps_task, int(count))

    def __enter__(self) -> EpochProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        """While the epoch program compiles the bar says so; then one line with the time it took."""
        task = self.progress.tasks[0]
        description, start = task.description, time.perf_counter()
        self.progress.update(self.task, description=f"{description}: compiling the epoch program…")
        yield
        self.progress.update(self.task, description=description)
        prefix = f"[{self.label}] " if self.label else ""
        self.progress.console.print(
            f"{prefix}compiled the epoch program in {time.perf_counter() - start:.1f}s", markup=False
        )

    def printer(self, prefix: str = ""):
        """An epoch callback printing one run's line (``prefix`` names the run among fused runs)."""

        def print_epoch(record: dict[str, Any]) -> None:
            line = format_epoch(record, self.epochs)
            self.progress.console.print(f"[{prefix}] {line}" if prefix else line, soft_wrap=True, markup=False)
            self.progress.update(self.task, completed=max(record["epoch"], self.progress.tasks[0].completed))
            if self.steps_task is not None:
                self.progress.reset(self.steps_task)

        return print_epoch


def epochs_text(count: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def results_table(summary: dict[str, Any]) -> Table:
    """Final train/val metrics, the best epoch's validation metrics and the test metrics."""
    best_epoch = summary["best_epoch"]
    table = Table(title=f"{summary['name']}: {summary['status']} after {epochs_text(summary['epochs_completed'])}")
    best_column = "best val" if best_epoch is None else f"best val (epoch {best_epoch})"
    for column in ("metric", "train", "val", best_column, "test"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    final, best, test = summary["final"] or {}, summary["best"] or {}, summary["test"] or {}

    def cell(values: dict, key: str) -> str:
        return f"{values[key]:.4f}" if key in values else "-"

    for metric in ("loss", "accuracy"):
        table.add_row(
            metric,
            cell(final, f"train/{metric}"),
            cell(final, f"val/{metric}"),
            cell(best, f"val/{metric}"),
            cell(test, metric),
        )
    params = summary["params"]
    steady = summary["steady_epoch_time_s"]
    # Two lines, each under 80 columns: Rich would otherwise wrap one long caption mid-phrase.
    table.caption = (
        f"{params['total']:,} params ({params['trainable']:,} trainable)\n"
        f"compile {summary['compile_time_s']:.1f}s · steady epoch {f'{steady:.2f}s' if steady else 'n/a'}"
    )
    return table


def summary_line(label: str, summary: dict[str, Any]) -> str:
    """One line per run of a fused group or job of a sweep: status, final validation and test accuracy."""
    final, test = summary["final"] or {}, summary["test"] or {}
    parts = [f"[{label}] {summary['status']} after {epochs_text(summary['epochs_completed'])}"]
    if "val/accuracy" in final:
        parts.append(f"val_acc {final['val/accuracy']:.4f}")
    if "accuracy" in test:
        parts.append(f"test_acc {test['accuracy']:.4f}")
    return "  ".join(parts)


@contextlib.contextmanager
def download_bar(description: str, total: int | None, shown_on: Console = console) -> Iterator[Callable[[int], None]]:
    """A download's progress bar: bytes so far of the total, speed, time left (on a terminal; elsewhere
    its final state, once)."""
    columns = (TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=shown_on) as progress:
        task = progress.add_task(description, total=total)
        yield lambda size: progress.advance(task, size)
