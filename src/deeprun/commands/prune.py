"""``deeprun-prune RUN_DIR threshold=T [save=true] [overwrite=false]``: the book's sparse-model guideline — train with ℓ1
(``regularizer=l1``), then zero out the tiny weights.

What it computes and writes: ``deeprun.runs.prune``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deeprun.commands.common import run_folder_command
from deeprun.runs.prune import PruneOptions, prune_run


def tables(report: dict[str, Any]):
    """The per-layer sparsity table and the before/after metrics table."""
    from rich.table import Table

    layers = Table(title=f"pruned |w| < {report['threshold']:g}")
    for column in ("layer", "kernel", "zeros before", "zeros after", "sparsity"):
        layers.add_column(column, justify="left" if column == "layer" else "right")
    for row in [*report["layers"], {"name": "total", "shape": None, **report["total"]}]:
        shape = "×".join(map(str, row["shape"])) if row["shape"] else f"{row['weights']:,}"
        layers.add_row(
            row["name"], shape, f"{row['zeros_before']:,}", f"{row['zeros_after']:,}", f"{row['sparsity']:.1%}"
        )
    metrics = Table(
        caption=f"loss includes the l1/l2 penalty: {report['before']['penalty']:.4g} before, "
        f"{report['after']['penalty']:.4g} after"
    )
    for column in ("split", "loss before", "loss after", "accuracy before", "accuracy after"):
        metrics.add_column(column, justify="left" if column == "split" else "right")
    for split in ("val", "test"):
        before, after = report["before"][split], report["after"][split]
        metrics.add_row(
            split,
            f"{before['loss']:.4f}",
            f"{after['loss']:.4f}",
            f"{before['accuracy']:.4f}",
            f"{after['accuracy']:.4f}",
        )
    return layers, metrics


def main(argv: list[str] | None = None) -> None:
    report = run_folder_command("deeprun-prune", __doc__, PruneOptions, prune_run, argv)
    from deeprun.commands.console import console

    for table in tables(report):
        console.print(table)
    console.print(f"report: {Path(report['run']) / 'prune.json'}")
    if report["pruned_run"]:
        console.print(f"pruned run folder: {report['pruned_run']}")


if __name__ == "__main__":
    main()
