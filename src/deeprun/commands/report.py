"""``deeprun-report``: (re)write a folder's sweep summary and figures, and REPORT.md against the book."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deeprun.exit_codes import ExitCode
from deeprun.reports.sweep import CURVES_PNG, FINAL_PNG, GROUPS_CSV, SUMMARY_CSV, SUMMARY_MD, write_sweep_summary
from deeprun.runs.records import collect_runs

# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeprun-report",
        description="Summarize folders of deeprun runs (a sweep folder, or any folder of run folders): "
        f"writes {SUMMARY_CSV}, {SUMMARY_MD}, {CURVES_PNG} and {FINAL_PNG} into each DIR and prints the table.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", type=Path, help="folder of run folders")
    parser.add_argument("--no-figures", action="store_true", help="write only the CSV and Markdown tables")
    parser.add_argument(
        "--group-by",
        metavar="FIELD,...",
        type=lambda text: [field for field in text.split(",") if field],
        help="group the runs by these config fields (e.g. optimizer.learning_rate): mean ± std of each "
        "metric per group (default: over trainer.seed, when the seed is swept)",
    )
    parser.add_argument(
        "--book",
        metavar="EXPERIMENT",
        help="also write REPORT.md comparing with the book's "
        "numbers for this chapter-11 experiment (see deeprun.reports.book.EXPERIMENTS)",
    )
    return parser


#: The metrics shown, under short names (the files keep every column).
SHOWN_METRICS = {"status": "status", "final_val_accuracy": "val_acc", "test_accuracy": "test_acc"}


def varying_table(csv_path: Path, title: str):
    """The sweep summary as a Rich table that fits a terminal: the job, the config fields that tell
    its runs apart (the CSV's columns before ``overrides``: the swept ones), status, validation and test
    accuracy."""
    import csv

    from rich.table import Table

    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows, header = list(reader), list(reader.fieldnames or [])
    swept = header[1 : header.index("overrides")] if "overrides" in header else []
    table = Table(title=title, title_justify="left")
    table.add_column("job", no_wrap=True)
    for name in swept:
        table.add_column(name, justify="right", overflow="fold")
    for name, label in SHOWN_METRICS.items():
        table.add_column(label, justify="left" if name == "status" else "right", no_wrap=True)
    for row in rows:
        table.add_row(row["job"], *(_cell(row, name) for name in (*swept, *SHOWN_METRICS)))
    return table


def _cell(row: dict[str, str], name: str) -> str:
    value = row[name]
    if name == "status" and row.get("diverged_epoch"):
        return f"{value} (epoch {row['diverged_epoch']})"
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from deeprun.reports.book import EXPERIMENTS

    if args.book is not None and args.book not in EXPERIMENTS:
        print(
            f"deeprun-report: error: unknown experiment {args.book!r}; valid: {', '.join(EXPERIMENTS)}", file=sys.stderr
        )
        return ExitCode.BAD_INPUT
    # A task's experiment (the LR finder, MC dropout) compares the result files its folders hold.
    result_file = EXPERIMENTS[args.book].result_file if args.book is not None else None
    has_runs = {}
    for folder in args.dirs:
        if not folder.is_dir():
            print(f"deeprun-report: error: {folder} is not a directory", file=sys.stderr)
            return ExitCode.BAD_INPUT
        has_runs[folder] = bool(collect_runs(folder))
        if not has_runs[folder] and not (result_file and any(folder.rglob(result_file))):
            print(
                f"deeprun-report: error: no runs in {folder} (no folder with summary.json or .hydra/)", file=sys.stderr
            )
            return ExitCode.BAD_INPUT
    for index, folder in enumerate(args.dirs):
        if index:
            print()
        written: list[Path] = []
        if has_runs[folder]:
            csv_path, md_path = write_sweep_summary(folder, figures=not args.no_figures, group_by=args.group_by)
            from deeprun.commands.console import console

            console.print(varying_table(csv_path, f"{folder} (every column: {md_path.name}, {csv_path.name})"))
            written = [csv_path, md_path, *[folder / GROUPS_CSV] * (folder / GROUPS_CSV).is_file()]
            if not args.no_figures:
                written += [folder / CURVES_PNG, folder / FINAL_PNG]
        if args.book is not None:
            from deeprun.reports.book import write_book_report

            report = write_book_report(args.book, folder)
            print("\n" + report.read_text(), end="")
            written.append(report)
        print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
