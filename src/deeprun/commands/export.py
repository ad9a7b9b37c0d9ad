"""``deeprun-export RUN_DIR [precision=float32] [batch_sizes=[1,32,256,1024]] [repeats=50]``: the book's
low-latency guideline — fold batch norm into the Dense layers, export, and time inference per precision.

What it computes and writes: ``deeprun.runs.export``.
"""

from __future__ import annotations

from typing import Any

from deeprun.commands.common import run_folder_command
from deeprun.runs.export import ExportOptions, export_run


def tables(report: dict[str, Any]):
    from rich.table import Table

    checks = Table(title=f"test split vs the unfolded model ({report['export']})")
    for column in ("model", "test accuracy", "argmax agreement", "max |Δlogit|"):
        checks.add_column(column, justify="left" if column == "model" else "right")
    for label, check in report["checks"].items():
        checks.add_row(
            label,
            f"{check['test_accuracy']:.4f}",
            f"{check['argmax_agreement']:.4f}",
            f"{check['max_abs_logit_diff']:.2e}",
        )
    result = [checks]
    if report["latency"]:
        sizes = sorted({row["batch_size"] for row in report["latency"]})
        latency = Table(title=f"median latency per call, ms ({report['device']['kind']})")
        latency.add_column("model")
        for size in sizes:
            latency.add_column(f"batch {size}", justify="right")
        for label in report["checks"]:
            times = {row["batch_size"]: row["median_ms"] for row in report["latency"] if row["model"] == label}
            latency.add_row(label, *(f"{times[size]:.3f}" for size in sizes))
        result.append(latency)
    return result


def main(argv: list[str] | None = None) -> None:
    report = run_folder_command("deeprun-export", __doc__, ExportOptions, export_run, argv)
    from deeprun.commands.console import console

    for table in tables(report):
        console.print(table)
    console.print(f"export folder: {report['export']} ({report['precision']})")


if __name__ == "__main__":
    main()
