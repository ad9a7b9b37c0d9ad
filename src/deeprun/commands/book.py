"""``python -m deeprun.commands.book [OUTPUTS] [DOC]``: docs/reproduction.md from the latest chapter runs."""

from __future__ import annotations

from pathlib import Path

from deeprun.files import write_text
from deeprun.reports.book import reproduction_markdown


def main() -> None:
    """``python -m deeprun.commands.book [OUTPUTS] [DOC]``: write docs/reproduction.md from the latest runs."""
    import datetime
    import platform
    import sys

    outputs = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs")
    doc = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/reproduction.md")
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    import os

    machine = f"{cpu}, {os.cpu_count()} cores (CPU only)"
    doc.parent.mkdir(parents=True, exist_ok=True)
    write_text(doc, reproduction_markdown(outputs, machine, datetime.date.today().isoformat()))
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
