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
    """Final, best and test metrics side by side, plus status and timings."""
    table = Table(title=f"{summary['name']}: {summary['status']} after {summary['epochs_completed']} epochs")
    table.add_column("metric")
    for column in ("final", "best", "test"):
        table.add_column(f"{column}" + (f" (epoch {summary['best_epoch']})" if column == "best" else ""),
                         justify="right")
    for metric in ("loss", "accuracy"):
        for split in ("train", "val"):
            key = f"{split}/{metric}"
            row = [key]
            for column in ("final", "best"):
                values = summary[column] or {}
                row.append(f"{values[key]:.4f}" if key in values else "")
            test = summary["test"] or {}
            row.append(f"{test[metric]:.4f}" if split == "val" and metric in test else "")
            table.add_row(*row)
    params = summary["params"]
    table.caption = (
        f"params {params['total']:,} ({params['trainable']:,} trainable)  ·  "
        f"compile {summary['compile_time_s']:.1f}s  ·  steady epoch "
        + (f"{summary['steady_epoch_time_s']:.2f}s" if summary["steady_epoch_time_s"] else "n/a")
    )
    return table
