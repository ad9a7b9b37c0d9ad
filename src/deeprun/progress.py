"""Rich console output: a progress bar over epochs, one line per epoch, a results table at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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

    def __init__(self, epochs: int, description: str):
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(description, total=epochs)

    def __enter__(self) -> EpochProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, record: dict[str, Any]) -> None:
        self.progress.console.print(format_epoch(record, self.epochs), soft_wrap=True)
        self.progress.advance(self.task)


def results_table(summary: dict[str, Any]) -> Table:
    """Final train/val metrics, the best epoch's validation metrics and the test metrics."""
    best_epoch = summary["best_epoch"]
    table = Table(title=f"{summary['name']}: {summary['status']} after {summary['epochs_completed']} epochs")
    for column in ("metric", "train", "val", f"best val (epoch {best_epoch})", "test"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    final, best, test = summary["final"] or {}, summary["best"] or {}, summary["test"] or {}

    def cell(values: dict, key: str) -> str:
        return f"{values[key]:.4f}" if key in values else "-"

    for metric in ("loss", "accuracy"):
        table.add_row(metric, cell(final, f"train/{metric}"), cell(final, f"val/{metric}"),
                      cell(best, f"val/{metric}"), cell(test, metric))
    params = summary["params"]
    steady = summary["steady_epoch_time_s"]
    table.caption = (
        f"{params['total']:,} params ({params['trainable']:,} trainable) · compile {summary['compile_time_s']:.1f}s"
        f" · steady epoch {f'{steady:.2f}s' if steady else 'n/a'}"
    )
    return table
